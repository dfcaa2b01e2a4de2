"""Saved artifacts survive crashes, corruption and tampering.

- a save killed (or failing) at any file-system step leaves the old or the new model complete
  under its name, and readers never take the leftovers for models;
- every file's SHA-256 is recorded and checked: flipped bytes are caught;
- an internally inconsistent ``state.npz`` fails at load time, naming the file and the array;
- the hybrid's component paths stay inside its folder;
- a tampered ``config.json`` or npy header is a clear error (exit 2 in the CLI), no traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from artifact_tools import edit_config, install_faults, read_state, record_checksums, rewrite_state
from loguru import logger
from typer.testing import CliRunner

from funnelrec.cli import _load_models
from funnelrec.cli import app as cli_app
from funnelrec.models import (
    ALSRecommender,
    FunnelAwareHybridRecommender,
    GRU4RecRecommender,
    Item2VecRecommender,
    PopularItemsRecommender,
    SASRecRecommender,
    SessionKNNRecommender,
    TwoTowerRecommender,
)
from funnelrec.models.artifacts import CHECKSUM_KEY, atomic_dir, read_npz, recover_interrupted_save
from funnelrec.models.base import REGISTRY, ArtifactError, Recommender
from funnelrec.models.explainable.explainer import RecommendationExplainer
from funnelrec.serving.app import create_app, find_model_dirs, load_artifacts

#: A pid no process can have (above Linux's largest pid_max, 2**22).
DEAD_PID = 99_999_999
TORCH = {"epochs": 1, "seed": 3, "show_progress": False, "device": "cpu"}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def saved(tiny_split, tmp_path_factory) -> dict[str, Path]:
    """One small fitted artifact of every kind, saved once: ``{name: folder}`` (copy before damaging)."""
    train, val, _ = tiny_split
    root = tmp_path_factory.mktemp("saved")
    models = {
        "popular": PopularItemsRecommender(),
        "als": ALSRecommender(factors=8, iterations=2, random_state=0),
        "item2vec": Item2VecRecommender(embedding_dim=8, epochs=1, seed=0),
        "session_knn": SessionKNNRecommender(),
        "gru4rec": GRU4RecRecommender(embedding_dim=8, hidden_dim=16, batch_size=64, n_sample=8, **TORCH),
        "sasrec": SASRecRecommender(hidden_dim=16, n_heads=1, n_layers=1, max_seq_length=10, batch_size=64, **TORCH),
        "two_tower": TwoTowerRecommender(embedding_dim=16, hidden_dims=(16,), batch_size=128, use_faiss=True,
                                         index_kind="exact", **TORCH),
    }
    folders = {name: model.fit(train).save(root / name) for name, model in models.items()}
    hybrid = FunnelAwareHybridRecommender(
        popular_model=PopularItemsRecommender(), cf_model=ALSRecommender(factors=8, iterations=2, random_state=0),
        session_model=SessionKNNRecommender(), epochs=5, max_training_examples=200, seed=0,
    ).fit(train, val_events=val)
    folders["funnel_hybrid"] = hybrid.save(root / "funnel_hybrid")
    folders["explainer"] = RecommendationExplainer().fit(train).save(root / "explainer")
    return folders


@pytest.fixture
def copy_of(saved, tmp_path):
    """``copy_of(name, into=None)``: a private copy of a saved artifact (in ``into``, default a fresh folder)."""
    def copy(name: str, into: Path | None = None) -> Path:
        target = (into or tmp_path / "copies") / name
        shutil.copytree(saved[name], target, symlinks=True)
        return target

    return copy


@pytest.fixture
def log_lines():
    """funnelrec's log lines while the test runs."""
    lines: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)
    logger.disable("funnelrec")


def load_any(folder: Path):
    return (RecommendationExplainer if folder.name == "explainer" else Recommender).load(folder)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- 10. atomic saves
def _run_folder(copy_of, tmp_path: Path, scenario: str, train) -> tuple[Path, Recommender, Recommender]:
    """A run folder holding ``als`` and, per scenario, the ``popular`` target of the save under test.

    ``overwrite``: an old ``popular`` is replaced; ``first``: there is none yet; ``after_crash``:
    an earlier save was killed between its renames (no ``popular``, both copies beside it). The
    old and the new model differ in their parameters.
    """
    root = tmp_path / scenario
    copy_of("als", root)
    old = PopularItemsRecommender().fit(train)
    new = PopularItemsRecommender(half_life_days=3.0, use_categories=False).fit(train)
    if scenario == "overwrite":
        old.save(root / "popular")
    elif scenario == "after_crash":
        old.save(root / f".popular.old-{DEAD_PID}-abc")
        new.save(root / f".popular.tmp-{DEAD_PID}-abc")
    return root, old, new


def _check_after_crash(snapshot: Path, old: Recommender, new: Recommender, tmp_path: Path, first_save: bool) -> str:
    """Every reader sees complete models only, and the next save repairs the folder."""
    views = {}
    for reader in ("serve", "load", "save"):
        copy = tmp_path / f"check-{reader}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(snapshot, copy, symlinks=True)
        views[reader] = copy
    served = load_artifacts(views["serve"]).models  # repairs, then loads everything
    expected = {"als", "popular"} if not first_save or "popular" in served else {"als"}
    assert set(served) == expected and set(find_model_dirs(views["serve"])) == expected
    assert hidden(views["serve"]) == []  # leftovers restored or removed
    assert set(_load_models(views["serve"])) == expected
    which = "none"
    if "popular" in served:
        params = served["popular"].get_params()
        assert params in (old.get_params(), new.get_params())
        which = "old" if params == old.get_params() else "new"
        # loading the name alone (no serve) repairs and gives the same model
        assert Recommender.load(views["load"] / "popular").get_params() == served["popular"].get_params()
    # the next save recovers from whatever the crash left
    new.save(views["save"] / "popular")
    assert hidden(views["save"]) == []
    assert Recommender.load(views["save"] / "popular").get_params() == new.get_params()
    return which


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked processes")
@pytest.mark.parametrize("scenario", ["overwrite", "first", "after_crash"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_model(copy_of, tmp_path, scenario, tiny_split):
    root, old, new = _run_folder(copy_of, tmp_path, scenario, tiny_split[0])
    source = new.save(tmp_path / "new-source" / "popular")
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    helper = Path(__file__).with_name("crash_saves.py")
    done = subprocess.run([sys.executable, str(helper), str(source), str(root / "popular"), str(snapshots)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    # every step of the save was hit: the renames, the writes, the deletion of the old copy
    assert any("os.replace .popular.tmp" in s for s in steps)
    assert any("during savez" in s for s in steps) and any("during write_text config.json" in s for s in steps)
    if scenario != "first":
        assert any("rmtree .popular.old" in s for s in steps)
    seen = {}
    for k, step in enumerate(steps, start=1):
        seen[step] = _check_after_crash(snapshots / str(k), old, new, tmp_path, first_save=scenario == "first")
    if scenario == "overwrite":
        assert set(seen.values()) == {"old", "new"}  # both sides of the switch were crashed into
        assert seen[next(s for s in steps if "os.replace .popular.tmp" in s)] == "old"


def test_a_fault_at_any_step_of_a_save_leaves_the_old_or_the_new_model(copy_of, tmp_path, monkeypatch, tiny_split):
    root, old, new = _run_folder(copy_of, tmp_path, "overwrite", tiny_split[0])
    pristine = tmp_path / "pristine"
    shutil.copytree(root, pristine)

    def fail(what: str) -> None:
        raise OSError(f"injected fault {what}")

    outcomes = set()
    for k in range(1, 100):
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        with monkeypatch.context() as patch:
            seen = install_faults(k, fail, patch.setattr)
            try:
                new.save(root / "popular")
                failed = False
            except OSError:
                failed = True
        if len(seen) < k:  # the save ran through without reaching step k: every step was tried
            break
        loaded = Recommender.load(root / "popular")
        outcomes.add((seen[k - 1].split()[1], failed))
        if failed:  # the caller was told; the old model is intact and nothing is left over
            assert loaded.get_params() == old.get_params(), seen[k - 1]
            assert hidden(root) == [], seen[k - 1]
        else:  # the fault hit a step the save may skip (flushing, deleting the old copy)
            assert loaded.get_params() == new.get_params(), seen[k - 1]
        assert set(find_model_dirs(root)) == {"als", "popular"}
        assert hidden(root) == []
    else:
        pytest.fail("the save never completed")
    assert {("os.replace", True), ("savez", True), ("write_text", True), ("rmtree", False)} <= outcomes


def test_readers_ignore_hidden_and_leftover_folders(copy_of, tmp_path, log_lines):
    root = tmp_path / "run"
    for name in ("als", "popular", "explainer"):
        copy_of(name, root)
    # complete copies under the names interrupted saves use, and a hidden folder of the user's
    shutil.copytree(root / "als", root / f".als.tmp-{DEAD_PID}-x1")
    shutil.copytree(root / "als", root / f".popular.old-{DEAD_PID}-x2")
    shutil.copytree(root / "als", root / ".backup")
    assert sorted(find_model_dirs(root)) == ["als", "popular"]
    assert sorted(load_artifacts(root).models) == ["als", "popular"]
    assert sorted(_load_models(root)) == ["als", "popular"]
    assert hidden(root) == [".backup"]  # the dead saves' leftovers were removed, the rest kept


def test_a_save_killed_between_its_renames_is_restored_on_load(copy_of, tmp_path):
    root = tmp_path / "run"
    copy_of("popular", root)
    old_params = Recommender.load(root / "popular").get_params()
    os.replace(root / "popular", root / f".popular.old-{DEAD_PID}-x")
    shutil.copytree(root / f".popular.old-{DEAD_PID}-x", root / f".popular.tmp-{DEAD_PID}-x")
    assert Recommender.load(root / "popular").get_params() == old_params
    assert (root / "popular" / "state.npz").is_file() and hidden(root) == []


def test_a_partly_deleted_old_copy_does_not_break_startup(copy_of, tmp_path):
    root = tmp_path / "run"
    copy_of("popular", root)
    copy_of("als", root)
    leftover = shutil.copytree(root / "als", root / f".als.old-{DEAD_PID}-x")
    (leftover / "state.npz").unlink()  # killed while deleting it
    with TestClient(create_app(root, api_key=None)) as client:
        assert client.get("/health").json()["models"] == ["als", "popular"]
    assert hidden(root) == []


#: A process that holds the lock a save holds on its folder (argv[1]) until it is killed.
_HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_the_folders_of_a_save_still_running_are_left_alone(copy_of, tmp_path, tiny_split):
    root = tmp_path / "run"
    copy_of("popular", root)
    writing = shutil.copytree(root / "popular", root / ".popular.tmp-1-x")
    other = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(writing)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        PopularItemsRecommender(use_categories=False).fit(tiny_split[0]).save(root / "popular")
        assert writing.is_dir()  # not ours to delete
        assert sorted(find_model_dirs(root)) == ["popular"]
    finally:
        other.kill()
        other.wait()


def test_leftovers_named_after_a_live_process_are_repaired(copy_of, tmp_path):
    """After a reboot or in a container, the pid in a leftover's name belongs to some other
    process (pid 1 always exists): no save holds the folder's lock, so it is repaired."""
    root = tmp_path / "run"
    copy_of("popular", root)
    old_params = Recommender.load(root / "popular").get_params()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.replace(root / "popular", root / ".popular.old-1-x")
        shutil.copytree(root / ".popular.old-1-x", root / f".popular.tmp-{other.pid}-x")
        assert Recommender.load(root / "popular").get_params() == old_params
        assert hidden(root) == []
    finally:
        other.kill()
        other.wait()


def test_a_save_running_in_this_process_is_left_alone(copy_of, tmp_path, tiny_split, monkeypatch):
    """A repair (a load in another thread) while a save of the same model runs: neither the
    folder being written nor the previous copy renamed aside is taken for a leftover."""
    root = tmp_path / "run"
    copy_of("popular", root)
    target = root / "popular"
    seen: list[list[str]] = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target and Path(src).name.startswith(".popular.tmp-"):
            recover_interrupted_save(target)  # between the two renames: only the old copy is there
            seen.append(hidden(root))
        return real_replace(src, dst, *args, **kwargs)

    model = PopularItemsRecommender(use_categories=False).fit(tiny_split[0])
    with atomic_dir(target) as writing:
        recover_interrupted_save(target)
        assert writing.is_dir() and hidden(root) == [writing.name]
        model.save(writing / "unused")  # any content
        monkeypatch.setattr(os, "replace", replace)
    monkeypatch.undo()
    assert len(seen) == 1 and len(seen[0]) == 2  # the old copy and the new folder were both kept
    assert (target / "unused").is_dir() and hidden(root) == []


def TestClient(app):  # noqa: N802  (imported lazily: starlette warns about httpx on import)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient as _TestClient
    return _TestClient(app)


# --------------------------------------------------------------------------- 11. checksums
def flip(path: Path, n_bytes: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) > n_bytes, f"{path} is too small to flip {n_bytes} bytes"
    start = (len(data) - n_bytes) // 2
    data[start : start + n_bytes] = bytes(b ^ 0xFF for b in data[start : start + n_bytes])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("two_tower", "faiss_index/index.faiss"),
        ("two_tower", "weights.safetensors"),
        ("gru4rec", "weights.safetensors"),
        ("popular", "state.npz"),
        ("funnel_hybrid", "components/cf/state.npz"),
        ("explainer", "state.npz"),
    ],
)
def test_flipped_bytes_are_a_checksum_mismatch_naming_the_file(copy_of, name, file):
    folder = copy_of(name)
    flip(folder / file)
    with pytest.raises(ArtifactError, match=rf"checksum mismatch: {re.escape(str(folder / file))}.*expected sha256 "
                                            r"[0-9a-f]{64}.*got [0-9a-f]{64}"):
        load_any(folder)


def test_every_file_is_covered_by_a_checksum(saved):
    for folder in saved.values():
        listed = json.loads((folder / "config.json").read_text())[CHECKSUM_KEY]
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        nested = {f for f in files if f.startswith("components/") and not f.endswith("/config.json")}
        assert set(listed) == files - {"config.json"} - nested  # a component's own config pins its files


@pytest.mark.parametrize("name", ["popular", "two_tower", "funnel_hybrid", "explainer"])
def test_files_saved_before_checksums_load_with_a_warning(copy_of, name, log_lines):
    folder = copy_of(name)
    for config in folder.rglob("*.json"):  # every config.json and the FAISS index.json
        meta = json.loads(config.read_text())
        meta.pop(CHECKSUM_KEY, None)
        config.write_text(json.dumps(meta))
    load_any(folder)
    assert any("records no checksums" in line and str(folder / "config.json") in line for line in log_lines)


def test_a_listed_file_missing_or_outside_the_folder(copy_of, tmp_path):
    folder = copy_of("two_tower")
    (folder / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(folder / 'weights.safetensors'))} is missing"):
        Recommender.load(folder)
    folder = copy_of("popular", tmp_path / "other")
    edit_config(folder, lambda c: c[CHECKSUM_KEY].update({"../../etc/passwd": "0" * 64}))
    with pytest.raises(ArtifactError, match="not a relative path inside"):
        Recommender.load(folder)


# --------------------------------------------------------------------------- 12. state checks
def _set(name: str, index, value):
    def change(arrays):
        array = arrays[name].copy()
        array[index] = value
        return {**arrays, name: array}

    return change


def _replace(name: str, make):
    return lambda arrays: {**arrays, name: make(arrays[name])}


def _duplicate_first(name: str):
    return _replace(name, lambda ids: np.r_[ids[:1], ids[:1], ids[2:]])


DAMAGES = [
    # the base arrays every model saves
    ("popular", "base_ui_indices", _set("base_ui_indices", 0, 10**6)),
    ("als", "base_ui_indptr", _replace("base_ui_indptr", lambda a: a[:-1])),
    ("popular", "base_item_popularity", _set("base_item_popularity", 3, np.nan)),
    ("session_knn", "base_item_category", _replace("base_item_category", lambda a: a[:-2])),
    ("item2vec", "base_item_ids", _duplicate_first("base_item_ids")),
    ("gru4rec", "base_ui_data", _set("base_ui_data", 0, np.inf)),
    # each model's own arrays
    ("popular", "scores", _set("scores", 0, np.nan)),
    ("als", "item_factors", _set("item_factors", (2, 1), np.inf)),
    ("als", "user_factors", _replace("user_factors", lambda a: a[:-1])),
    ("item2vec", "history_items", _set("history_items", 0, 10**6)),
    ("item2vec", "item_vectors", _set("item_vectors", (0, 0), np.nan)),
    ("session_knn", "session_indices", _set("session_indices", 0, -1)),
    ("session_knn", "user_last_session", _set("user_last_session", 0, 10**7)),
    ("session_knn", "user_last_offsets", _set("user_last_offsets", 1, 10**6)),
    ("gru4rec", "history_offsets", _replace("history_offsets", lambda a: a[:-1])),
    ("sasrec", "history_items", _set("history_items", 0, -5)),
    ("two_tower", "item_matrix", _set("item_matrix", (0, 0), np.nan)),
    ("two_tower", "user_features", _replace("user_features", lambda a: a[:-1])),
    ("two_tower", "item_cat_code", _set("item_cat_code", 0, -3)),
    ("funnel_hybrid", "context", _set("context", (0, 0), np.nan)),
    ("funnel_hybrid", "context_std", _set("context_std", 0, 0.0)),
    ("funnel_hybrid", "roles", _replace("roles", lambda a: np.array(["popular", "cf", "everything"]))),
    ("explainer", "co_view_indices", _set("co_view_indices", 0, 10**6)),
    ("explainer", "stage_codes", _set("stage_codes", 0, 9)),
    ("explainer", "popularity_", _replace("popularity_", lambda a: a.astype(np.float64))),
]


@pytest.mark.parametrize(("name", "array", "change"), DAMAGES, ids=[f"{n}-{a}" for n, a, _ in DAMAGES])
def test_an_inconsistent_state_fails_at_load_naming_the_file_and_array(copy_of, name, array, change):
    folder = copy_of(name)
    rewrite_state(folder, change)
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(folder / 'state.npz'))}.*{re.escape(repr(array))}"):
        load_any(folder)


def test_nan_weights_fail_at_load_naming_the_tensor(copy_of):
    from safetensors.numpy import load_file, save_file

    folder = copy_of("sasrec")
    tensors = load_file(str(folder / "weights.safetensors"))
    name = next(k for k, v in tensors.items() if v.dtype.kind == "f" and v.size > 1)
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    save_file(tensors, str(folder / "weights.safetensors"))
    record_checksums(folder)
    with pytest.raises(ArtifactError, match=rf"weights\.safetensors: tensor {re.escape(repr(name))} holds NaN"):
        Recommender.load(folder)


def test_a_damaged_state_stops_startup_instead_of_failing_requests(copy_of, tmp_path):
    root = tmp_path / "run"
    copy_of("popular", root)
    rewrite_state(root / "popular", _set("scores", slice(None), np.nan))  # once served as "score": null
    app = create_app(root, api_key=None)
    with pytest.raises(ArtifactError, match=r"popular/state\.npz: array 'scores' holds"), TestClient(app):
        pass
    assert "'scores'" in app.state.startup_error


# --------------------------------------------------------------------------- 13. component paths
@pytest.mark.parametrize("role", ["/{outside}/als", "../../outside/als", "cf/../../../outside/als"])
def test_hybrid_roles_cannot_name_paths(copy_of, tmp_path, role):
    outside = copy_of("als", tmp_path / "outside").parent
    folder = copy_of("funnel_hybrid")
    role = role.format(outside=str(outside).lstrip("/"))
    rewrite_state(folder, _replace("roles", lambda a: np.array([role if r == "cf" else r for r in a.tolist()])))
    with pytest.raises(ArtifactError, match="'roles' must name distinct components"):
        Recommender.load(folder)


@pytest.mark.parametrize("with_checksums", [True, False])
def test_a_component_symlinked_out_of_the_folder_is_refused(copy_of, tmp_path, with_checksums):
    outside = copy_of("als", tmp_path / "outside")
    folder = copy_of("funnel_hybrid")
    shutil.rmtree(folder / "components" / "cf")
    (folder / "components" / "cf").symlink_to(outside, target_is_directory=True)
    if not with_checksums:  # a file saved before checksums: the hybrid itself refuses the path
        edit_config(folder, lambda c: c.pop(CHECKSUM_KEY))
    with pytest.raises(ArtifactError, match=rf"leads to {re.escape(str(outside.resolve()))}.*outside the artifact"):
        Recommender.load(folder)


# --------------------------------------------------------------------------- 14. tampered configs
def _forge_header(folder: Path, array: str, shape: tuple[int, ...]) -> None:
    """Rewrite ``state.npz`` so that ``array``'s npy header declares ``shape`` (its data unchanged)."""
    arrays = read_state(folder)
    with zipfile.ZipFile(folder / "state.npz", "w") as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            if name == array:
                np.lib.format.write_array_header_1_0(
                    buffer, {"descr": np.lib.format.dtype_to_descr(value.dtype), "fortran_order": False, "shape": shape})
                buffer.write(value.tobytes())
            else:
                np.lib.format.write_array(buffer, value, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    record_checksums(folder)


TAMPERS = {
    "unknown parameter": lambda f: edit_config(f, lambda c: c["params"].update(bogus=1)),
    "another model's parameter": lambda f: edit_config(f, lambda c: c["params"].update(hidden_dim=8)),
    "another model type": lambda f: edit_config(f, lambda c: c.update(model="sasrec")),
    "an unknown model type": lambda f: edit_config(f, lambda c: c.update(model="nope")),
    "a string for an int": lambda f: edit_config(f, lambda c: c["params"].update(factors="8")),
    "a float for an int": lambda f: edit_config(f, lambda c: c["params"].update(iterations=2.5)),
    "a list for params": lambda f: edit_config(f, lambda c: c.update(params=[1, 2])),
    "a string format version": lambda f: edit_config(f, lambda c: c.update(format_version="1")),
    "a number for the model": lambda f: edit_config(f, lambda c: c.update(model=5)),
    "a 373 GiB npy header": lambda f: _forge_header(f, "item_factors", (100_000_000_000,)),
    "a non-object config": lambda f: (f / "config.json").write_text("[1, 2, 3]"),
}
EXPECTED = {
    "unknown parameter": r"config\.json: ALSRecommender takes no parameter\(s\) \['bogus'\]",
    "another model's parameter": r"config\.json: ALSRecommender takes no parameter\(s\) \['hidden_dim'\]",
    "another model type": r"config\.json: SASRecRecommender takes no parameter\(s\) \['alpha', 'factors'",
    "an unknown model type": r"config\.json: unknown model 'nope'",
    "a string for an int": r"config\.json: parameter 'factors' of ALSRecommender must be int, got \"8\"",
    "a float for an int": r"parameter 'iterations' of ALSRecommender must be int, got 2\.5",
    "a list for params": r"config\.json is corrupted: 'params' must be an object",
    "a string format version": r"config\.json is corrupted: 'format_version' must be an integer",
    "a number for the model": r"config\.json is corrupted: 'model' must be a string",
    "a 373 GiB npy header": r"state\.npz: array 'item_factors' declares shape \(100000000000,\) of float32 "
                            r"\(372\.5 GiB\)",
    "a non-object config": r"config\.json is corrupted: expected a JSON object",
}


class _RenamedParamPopular(PopularItemsRecommender):
    """A model whose earlier release called ``half_life_days`` ``decay_days`` and had a
    ``legacy_cutoff`` it no longer takes: its compatibility hook maps them."""

    @classmethod
    def _saved_params(cls, params):
        if "decay_days" in params:
            params["half_life_days"] = params.pop("decay_days")
        params.pop("legacy_cutoff", None)
        return params


def test_the_compatibility_hook_runs_before_the_parameters_are_checked(tiny_split, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "renamed_popular", _RenamedParamPopular)
    monkeypatch.setattr(_RenamedParamPopular, "registry_key", "renamed_popular")
    folder = _RenamedParamPopular(half_life_days=3.0).fit(tiny_split[0]).save(tmp_path / "renamed")

    def as_older_release(config):
        config["params"]["decay_days"] = config["params"].pop("half_life_days")
        config["params"]["legacy_cutoff"] = 7

    edit_config(folder, as_older_release)
    loaded = Recommender.load(folder)
    assert type(loaded) is _RenamedParamPopular and loaded.half_life_days == 3.0
    edit_config(folder, lambda config: config["params"].update(bogus=1))  # still refused
    with pytest.raises(ArtifactError, match=r"takes no parameter\(s\) \['bogus'\]"):
        Recommender.load(folder)


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_tampered_artifact_is_a_clear_error(copy_of, tamper):
    folder = copy_of("als")
    TAMPERS[tamper](folder)
    with pytest.raises(ArtifactError, match=EXPECTED[tamper]):
        Recommender.load(folder)


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_recommend_on_a_tampered_model_exits_2_without_a_traceback(copy_of, tamper):
    folder = copy_of("als")
    TAMPERS[tamper](folder)
    result = CliRunner().invoke(cli_app, ["--quiet", "recommend", "--model", str(folder), "--visitor", "1"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "error:" in result.output and str(folder) in result.output.replace("\n", "")


@pytest.mark.parametrize("command", [["evaluate"], ["serve", "--port", "0"]])
def test_evaluate_and_serve_on_a_tampered_run_exit_2_without_a_traceback(copy_of, tmp_path, command, capfd):
    root = tmp_path / "run"
    copy_of("popular", root)
    TAMPERS["unknown parameter"](copy_of("als", root))
    result = CliRunner().invoke(cli_app, ["--quiet", command[0], "--artifacts", str(root), *command[1:]])
    captured = capfd.readouterr()
    assert result.exit_code == 2, result.output
    output = result.output + captured.out + captured.err
    assert "takes no parameter(s) ['bogus']" in result.output.replace("\n", " ")
    assert "Traceback" not in output


def test_a_model_folder_without_config_is_skipped_with_a_log_line(copy_of, tmp_path, log_lines):
    root = tmp_path / "run"
    copy_of("popular", root)
    (copy_of("als", root) / "config.json").unlink()
    (root / "notes").mkdir()
    assert sorted(find_model_dirs(root)) == ["popular"]
    assert any("Skipping" in line and str(root / "als") in line and "config.json" in line for line in log_lines)
    assert any("Skipping" in line and str(root / "notes") in line for line in log_lines)


def test_npy_headers_are_checked_before_anything_is_allocated(copy_of, tmp_path):
    folder = copy_of("popular")
    _forge_header(folder, "scores", (3, 7))
    with pytest.raises(ArtifactError, match=r"'scores' declares shape \(3, 7\) of float32 \(84 bytes\) but the file "
                                            r"stores 1\.\d KiB of data"):
        read_npz(folder / "state.npz")
    folder = copy_of("popular", tmp_path / "other")
    with zipfile.ZipFile(folder / "state.npz", "a") as archive:
        archive.writestr("extra.txt", b"not an array")
    with pytest.raises(ArtifactError, match=r"member 'extra\.txt' is not an array"):
        read_npz(folder / "state.npz")
