"""The example notebook: committed clean, and it runs top to bottom (tiny synthetic data, through
environment settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "tour.ipynb"


def test_the_committed_notebook_has_no_outputs_and_no_seed_version_names():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    # outputs of a run (progress bars, widgets, tiny-scale numbers) are not committed
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert "widgets" not in notebook["metadata"]
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert "v2_" not in text and "V2" not in text


@pytest.mark.slow
def test_example_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FUNNELREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FUNNELREC_DEMO_SCALE", "tiny")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "\n".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "Setup complete!" in outputs
    assert "GRU4Rec Results:" in outputs and "ndcg@10" in outputs
    assert "Summary:" in outputs and "Confidence:" in outputs
    assert "Results saved!" in outputs
    saved = tmp_path / "data" / "processed" / "notebook_results.csv"
    assert saved.exists()
    import pandas as pd

    assert set(pd.read_csv(saved)["model"]) == {"GRU4Rec", "SASRec", "TwoTower", "FunnelAwareHybrid"}
