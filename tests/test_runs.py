"""Run folders: naming, run.json, and what a path given to the CLI selects."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from funnelrec.errors import ArtifactError
from funnelrec.runs import find_runs, new_run_dir, read_run_info, select_models, write_run_info


def _model(folder, model_type="popular"):
    """A folder that reads as a saved model (what select_models looks at: config.json's type)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": model_type}))
    return folder


def _run(root, name, created, models=("popular",), explainer=False):
    run = root / name
    for key in models:
        _model(run / key, key)
    if explainer:
        (run / "explainer").mkdir()
        (run / "explainer" / "config.json").write_text("{}")  # no "model" key: not a model
    write_run_info(run, created=created)
    return run


def test_new_run_dirs_started_in_the_same_second_get_their_own_folders(tmp_path):
    started = datetime(2025, 1, 2, 3, 4, 5)
    names = [new_run_dir(tmp_path / "artifacts", started).name for _ in range(3)]
    assert names == ["20250102-030405", "20250102-030405-2", "20250102-030405-3"]


def test_run_info_merges_and_reads_back(tmp_path):
    write_run_info(tmp_path, command="demo", models=["als"])
    write_run_info(tmp_path, fit_seconds={"als": 1.5})
    info = read_run_info(tmp_path)
    assert info["command"] == "demo" and info["fit_seconds"] == {"als": 1.5} and "created" in info
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="run.json is corrupted"):
        read_run_info(tmp_path)
    assert read_run_info(tmp_path / "none") == {}


def test_a_folder_of_runs_selects_the_newest_and_says_what_it_left(tmp_path):
    old = _run(tmp_path, "b-old", "2025-01-01T10:00:00", models=("popular", "als"))
    new = _run(tmp_path, "a-new", "2025-03-01T10:00:00", models=("session_knn",), explainer=True)
    _model(tmp_path / "als")  # a model outside any run, as the old `train` wrote it
    assert find_runs(tmp_path) == [old, new]  # by start time, not by name
    selection = select_models(tmp_path)
    assert selection.root == new and selection.run_dir == new and list(selection.model_dirs) == ["session_knn"]
    assert "holds 2 runs (b-old, a-new); using the newest, a-new" in selection.note
    assert "outside any run: als" in selection.note
    assert selection.explainer_dir == new / "explainer"


def test_a_run_folder_and_a_model_folder_in_it(tmp_path):
    run = _run(tmp_path, "r", "2025-01-01T10:00:00", models=("popular", "als"), explainer=True)
    selection = select_models(run)
    assert selection.note is None and selection.model_types() == {"als": "als", "popular": "popular"}
    one = select_models(run / "als")
    assert list(one.model_dirs) == ["als"] and one.run_dir == run and one.explainer_dir == run / "explainer"
    alone = select_models(_model(tmp_path / "elsewhere" / "popular"))
    assert alone.run_dir is None and alone.explainer_dir is None


def test_nothing_to_select_names_the_path(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        select_models(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no saved models in .*empty"):
        select_models(tmp_path / "empty")
