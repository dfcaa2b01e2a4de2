"""The example notebook runs top to bottom (tiny synthetic data, through environment settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "04_advanced_models.ipynb"

pytestmark = pytest.mark.slow


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
    saved = tmp_path / "data" / "processed" / "v2_notebook_results.csv"
    assert saved.exists()
    import pandas as pd

    assert set(pd.read_csv(saved)["model"]) == {"GRU4Rec", "SASRec", "TwoTower", "FunnelAwareHybrid"}
