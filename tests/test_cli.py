"""The command line through typer's CliRunner, on tiny synthetic data in a temporary folder."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from funnelrec.cli import app
from funnelrec.config import settings

runner = CliRunner()


def _point_settings(monkeypatch, root) -> None:
    monkeypatch.setattr(settings, "data_dir", root / "data")
    monkeypatch.setattr(settings, "artifacts_dir", root / "artifacts")
    monkeypatch.setattr(settings, "reports_dir", root / "reports")  # never into the checkout
    monkeypatch.setattr(settings, "demo_scale", "tiny")
    monkeypatch.setattr(settings, "progress_bars", True)  # restored after `--quiet` turned them off


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    _point_settings(monkeypatch, tmp_path)
    return tmp_path


def _flat(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """One demo run of two fast models (with its explainer and report), shared by the tests below."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        _point_settings(patch, root)
        result = runner.invoke(app, ["--quiet", "demo", "--models", "popular,session_knn", "--max-users", "50"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def demo_run(demo_root, monkeypatch):
    """The demo's run folder, with the settings pointing at the demo's folders."""
    _point_settings(monkeypatch, demo_root)
    (run,) = (demo_root / "artifacts").iterdir()
    return run


def test_generate_writes_retailrocket_files(workdir):
    result = runner.invoke(app, ["--quiet", "generate", "--scale", "tiny", "--seed", "3"])
    assert result.exit_code == 0, result.output
    raw = workdir / "data" / "raw"
    assert (raw / "events.csv").read_text().splitlines()[0] == "timestamp,visitorid,event,itemid,transactionid"
    for name in ("item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"):
        assert (raw / name).exists()
    assert "events" in result.output


def test_generate_rejects_unknown_scale(workdir):
    result = runner.invoke(app, ["generate", "--scale", "huge"])
    assert result.exit_code == 2 and "huge" in result.output


def test_describe_missing_data_is_a_clear_error(workdir):
    result = runner.invoke(app, ["describe"])
    assert result.exit_code == 2
    assert "funnelrec generate" in result.output


def test_demo_then_evaluate_and_recommend(demo_run, demo_root):
    report_dir = demo_root / "reports" / demo_run.name
    results = pd.read_csv(report_dir / "results.csv")
    assert set(results["model"]) == {"Popular", "SessionKNN"}
    assert {"ndcg@10", "precision@10", "hit_rate", "mrr", "coverage", "n_items"} <= set(results.columns)
    sessions = pd.read_csv(report_dir / "session_results.csv")
    assert (sessions["n_events"] > 0).all()
    assert (report_dir / "index.html").is_file()
    info = json.loads((demo_run / "run.json").read_text())
    assert info["models"] == ["popular", "session_knn"] and set(info["fit_seconds"]) == {"popular", "session_knn"}
    assert (demo_run / "explainer" / "config.json").exists()
    popular_dir = demo_run / "popular"
    assert (popular_dir / "config.json").exists()

    evaluated = runner.invoke(app, ["--quiet", "evaluate", "--artifacts", str(demo_run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "SessionKNN" in evaluated.output and "Popular" in evaluated.output

    visitor = int(pd.read_csv(demo_root / "data" / "raw" / "events.csv")["visitorid"].iloc[0])
    recs = runner.invoke(app, ["--quiet", "recommend", "--model", str(popular_dir), "--visitor", str(visitor),
                               "-n", "3"])
    assert recs.exit_code == 0, recs.output
    cold = runner.invoke(app, ["--quiet", "recommend", "--model", str(popular_dir), "--visitor", "-99"])
    assert cold.exit_code == 0 and "cold start" in _flat(cold.output)
    neither = runner.invoke(app, ["recommend", "--model", str(popular_dir)])
    assert neither.exit_code == 2


def test_result_tables_use_the_reports_labels(demo_run):
    from funnelrec.cli import VISITOR_TABLE_COLUMNS, metrics_table

    results = pd.read_csv(settings.reports_dir / demo_run.name / "results.csv")
    headers = [str(c.header) for c in metrics_table(results, VISITOR_TABLE_COLUMNS, "t").columns]
    assert headers == ["Model", "P@10", "R@10", "nDCG@10", "HR@20", "MRR@20", "Coverage@20", "Fit time"]


def test_recommend_on_a_run_takes_the_services_default_model_and_says_so(demo_run):
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(demo_run), "--items", "1,2", "-n", "3"])
    assert result.exit_code == 0, result.output
    # the service's rule (PREFERRED_MODELS) prefers session-kNN to popularity; the folders'
    # alphabetical order would have taken popular
    assert "Using session_knn, the default model" in _flat(result.output)
    assert "SessionKNN:" in result.output and "Popular:" not in result.output
    chosen = runner.invoke(app, ["--quiet", "recommend", "--model", str(demo_run / "popular"), "--items", "1"])
    assert chosen.exit_code == 0 and "Popular:" in chosen.output and "Using" not in chosen.output


def test_recommend_explains_and_takes_a_visitor_with_a_live_session(demo_run):
    train = pd.read_csv(settings.raw_dir / "events.csv")
    visitor, item = (int(v) for v in train[["visitorid", "itemid"]].iloc[0])
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(demo_run / "session_knn"),
                                 "--visitor", str(visitor), "--items", str(item), "-n", "3", "--explain"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert f"visitor {visitor} viewing {item}" in flat
    assert "why" in result.output and flat.count("(confidence ") == 3
    anonymous = runner.invoke(app, ["--quiet", "recommend", "--model", str(demo_run), "--items", str(item),
                                    "-n", "2", "--explain"])
    assert anonymous.exit_code == 0, anonymous.output
    assert _flat(anonymous.output).count("(confidence ") == 2


def test_recommend_explains_a_cold_start_answer_as_popularity(demo_run):
    # an unknown visitor without a session gets popular items: the text must not credit the model
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(demo_run / "session_knn"),
                                 "--visitor", "987654321", "-n", "2", "--explain"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert flat.count("Ranked by popularity") == 2 and "Ranked by SessionKNN" not in flat


def test_recommend_explain_needs_the_runs_explainer(demo_run, tmp_path):
    alone = shutil.copytree(demo_run / "popular", tmp_path / "popular")  # a model outside any run
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(alone), "--items", "1", "--explain"])
    assert result.exit_code == 2 and "explainer" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("items", "named"), [("abc", "'abc' is not an item id"), ("1,,2", "id 2 is empty"),
                                              ("", "id 1 is empty"), ("3, x7", "'x7' is not an item id")])
def test_recommend_names_a_bad_item_id(demo_run, items, named):
    result = runner.invoke(app, ["recommend", "--model", str(demo_run / "popular"), "--items", items])
    assert result.exit_code == 2 and named in _flat(result.output)
    assert "Traceback" not in result.output and "invalid literal" not in result.output


def test_serve_on_port_0_announces_the_port_it_bound(demo_run, monkeypatch):
    import uvicorn

    bound: dict[str, int] = {}

    async def stop_at_once(self) -> None:  # instead of serving until Ctrl+C
        bound["port"] = self.servers[0].sockets[0].getsockname()[1]

    monkeypatch.setattr(uvicorn.Server, "main_loop", stop_at_once)
    result = runner.invoke(app, ["--quiet", "serve", "--artifacts", str(demo_run), "--port", "0"])
    assert result.exit_code == 0, result.output
    announced = re.search(r"Serving .*? on http://127\.0\.0\.1:(\d+)", _flat(result.output))
    assert announced and int(announced.group(1)) == bound["port"] != 0


@pytest.mark.parametrize(("flag", "level"), [("--quiet", "warning"), ("--verbose", "debug"), (None, "info")])
def test_serve_gives_uvicorn_the_commands_log_level(demo_run, monkeypatch, flag, level):
    import uvicorn

    seen: dict[str, object] = {}

    async def stop_at_once(self) -> None:
        seen["level"] = self.config.log_level

    monkeypatch.setattr(uvicorn.Server, "main_loop", stop_at_once)
    result = runner.invoke(app, [*([flag] if flag else []), "serve", "--artifacts", str(demo_run), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert seen["level"] == level


def test_report_rebuilds_a_runs_report_from_its_saved_models(demo_run, demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "reports_dir", tmp_path / "reports")
    result = runner.invoke(app, ["--quiet", "report", "--artifacts", str(demo_run), "--max-users", "50"])
    assert result.exit_code == 0, result.output
    rebuilt = tmp_path / "reports" / demo_run.name
    html = (rebuilt / "index.html").read_text(encoding="utf-8")
    assert "SessionKNN" in html and "New visitor (no history)" in html and "Training time" in html
    columns = ["model", "ndcg@10", "hit_rate", "mrr", "coverage"]
    demo = pd.read_csv(demo_root / "reports" / demo_run.name / "results.csv")
    again = pd.read_csv(rebuilt / "results.csv")
    pd.testing.assert_frame_equal(again[columns], demo[columns])  # the same models, the same split
    assert (rebuilt / "session_results.csv").is_file()


def test_report_without_models_is_a_clear_error(workdir):
    (workdir / "empty").mkdir()
    result = runner.invoke(app, ["report", "--artifacts", str(workdir / "empty")])
    assert result.exit_code == 2 and "no saved models" in _flat(result.output)


def test_demo_scale_gets_its_own_data_and_each_run_keeps_its_results(workdir):
    assert runner.invoke(app, ["--quiet", "generate", "--scale", "tiny", "--seed", "3"]).exit_code == 0
    raw_events = (workdir / "data" / "raw" / "events.csv").read_bytes()
    scaled = runner.invoke(app, ["demo", "--scale", "tiny", "--models", "popular", "--max-users", "20",
                                 "--no-report"])
    assert scaled.exit_code == 0, scaled.output
    assert "(synthetic, scale 'tiny')" in _flat(scaled.output)
    (first,) = (workdir / "artifacts").iterdir()
    assert json.loads((first / "run.json").read_text())["raw_dir"] == str(
        (workdir / "data" / "synthetic" / f"tiny-seed{settings.random_seed}").resolve())
    first_results = (workdir / "reports" / first.name / "results.csv").read_bytes()

    plain = runner.invoke(app, ["--quiet", "demo", "--models", "popular", "--max-users", "20", "--no-report"])
    assert plain.exit_code == 0, plain.output
    (second,) = set((workdir / "artifacts").iterdir()) - {first}
    assert json.loads((second / "run.json").read_text())["raw_dir"] == str((workdir / "data" / "raw").resolve())
    assert (workdir / "data" / "raw" / "events.csv").read_bytes() == raw_events  # never regenerated
    assert (workdir / "reports" / first.name / "results.csv").read_bytes() == first_results  # not overwritten
    for run in (first, second):
        assert (workdir / "reports" / run.name / "session_results.csv").is_file()
    assert not (workdir / "data" / "processed").exists()
    bad = runner.invoke(app, ["demo", "--scale", "huge"])
    assert bad.exit_code == 2 and "huge" in bad.output


def test_quiet_hides_progress_bars(workdir):
    args = ["train", "gru4rec", "-p", "epochs=1", "-p", "hidden_dim=8", "-p", "batch_size=64"]
    loud = runner.invoke(app, [*args, "--out", str(workdir / "loud")])
    assert loud.exit_code == 0, loud.output
    assert "GRU4Rec epoch 1/1" in loud.output  # the bar is there to hide
    quiet = runner.invoke(app, ["--quiet", *args, "--out", str(workdir / "quiet")])
    assert quiet.exit_code == 0, quiet.output
    assert "epoch 1/1" not in quiet.output and "batch/s" not in quiet.output


def test_demo_rejects_unknown_model(workdir):
    result = runner.invoke(app, ["--quiet", "demo", "--models", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_train_with_params_and_bad_params(workdir):
    ok = runner.invoke(app, ["--quiet", "train", "als", "-p", "factors=8", "-p", "iterations=2"])
    assert ok.exit_code == 0, ok.output
    (run,) = (workdir / "artifacts").iterdir()
    assert (run / "als" / "state.npz").exists() and "new run" in _flat(ok.output)
    bad = runner.invoke(app, ["--quiet", "train", "als", "-p", "factors=0"])
    assert bad.exit_code == 2 and "factors" in bad.output
    unknown = runner.invoke(app, ["--quiet", "train", "nope"])
    assert unknown.exit_code == 2 and "available" in unknown.output


def test_train_the_hybrid_with_its_components(workdir):
    result = runner.invoke(app, ["--quiet", "train", "funnel_hybrid", "-p", "epochs=5",
                                 "-p", "max_training_examples=200"])
    assert result.exit_code == 0, result.output
    (run,) = (workdir / "artifacts").iterdir()
    saved = run / "funnel_hybrid"
    assert sorted(p.name for p in (saved / "components").iterdir()) == ["cf", "content", "popular", "session"]


def test_evaluate_missing_artifacts(workdir):
    result = runner.invoke(app, ["evaluate", "--artifacts", str(workdir / "none")])
    assert result.exit_code == 2 and "does not exist" in _flat(result.output)
    (workdir / "empty").mkdir()
    result = runner.invoke(app, ["evaluate", "--artifacts", str(workdir / "empty")])
    assert result.exit_code == 2 and "no saved models" in _flat(result.output)


def test_train_writes_a_run_and_a_folder_of_runs_says_which_run_it_takes(workdir, monkeypatch):
    first = runner.invoke(app, ["--quiet", "train", "popular"])
    assert first.exit_code == 0, first.output
    (run,) = (workdir / "artifacts").iterdir()
    assert (run / "popular" / "config.json").is_file() and (run / "explainer" / "config.json").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["command"] == "train" and info["models"] == ["popular"] and info["fit_seconds"]["popular"] >= 0
    assert f"serve --artifacts {run}" in _flat(first.output)

    second = runner.invoke(app, ["--quiet", "train", "session_knn"])
    assert second.exit_code == 0, second.output
    (newest,) = set((workdir / "artifacts").iterdir()) - {run}
    # a model folder lying outside any run, as the old `train` wrote them
    shutil.copytree(run / "popular", workdir / "artifacts" / "popular")

    import uvicorn

    async def stop_at_once(self) -> None:  # instead of serving until Ctrl+C
        return None

    monkeypatch.setattr(uvicorn.Server, "main_loop", stop_at_once)
    for command in ("evaluate", "serve"):
        extra = ["--port", "0"] if command == "serve" else []
        result = runner.invoke(app, ["--quiet", command, "--artifacts", str(workdir / "artifacts"), *extra])
        assert result.exit_code == 0, result.output
        flat = _flat(result.output)
        assert f"holds 2 runs ({run.name}, {newest.name}); using the newest, {newest.name}" in flat
        assert "outside any run: popular" in flat
    assert f"Serving session_knn from {newest} on" in flat


def test_demo_scale_data_is_kept_per_seed(workdir, monkeypatch):
    from funnelrec.pipeline import synthetic_dir

    monkeypatch.setattr(settings, "random_seed", 5)
    assert synthetic_dir("tiny") == synthetic_dir("tiny", seed=5) != synthetic_dir("tiny", seed=6)
    assert synthetic_dir("tiny").name == "tiny-seed5"
