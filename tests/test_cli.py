"""The command line through typer's CliRunner, on tiny synthetic data in a temporary folder."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from funnelrec.cli import app
from funnelrec.config import settings

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    monkeypatch.setattr(settings, "artifacts_dir", tmp_path / "artifacts")
    monkeypatch.setattr(settings, "reports_dir", tmp_path / "reports")  # never into the checkout
    monkeypatch.setattr(settings, "demo_scale", "tiny")
    return tmp_path


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


def test_demo_then_evaluate_and_recommend(workdir):
    result = runner.invoke(app, ["--quiet", "demo", "--models", "popular,als", "--max-users", "50"])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(workdir / "data" / "processed" / "demo_results.csv")
    assert set(results["model"]) == {"Popular", "ALS"}
    assert {"ndcg@10", "precision@10", "hit_rate", "mrr", "coverage"} <= set(results.columns)
    sessions = pd.read_csv(workdir / "data" / "processed" / "demo_session_results.csv")
    assert (sessions["n_events"] > 0).all()
    runs = list((workdir / "artifacts").iterdir())
    assert len(runs) == 1
    assert len(list((workdir / "reports").glob("*/index.html"))) == 1
    als_dir = runs[0] / "als"
    assert (als_dir / "config.json").exists()

    evaluated = runner.invoke(app, ["--quiet", "evaluate", "--artifacts", str(runs[0])])
    assert evaluated.exit_code == 0, evaluated.output
    assert "ALS" in evaluated.output and "Popular" in evaluated.output

    visitor = int(pd.read_csv(workdir / "data" / "raw" / "events.csv")["visitorid"].iloc[0])
    recs = runner.invoke(app, ["--quiet", "recommend", "--model", str(als_dir), "--visitor", str(visitor), "-n", "3"])
    assert recs.exit_code == 0, recs.output
    cold = runner.invoke(app, ["--quiet", "recommend", "--model", str(als_dir), "--visitor", "-99"])
    assert cold.exit_code == 0 and "cold start" in cold.output
    both = runner.invoke(app, ["recommend", "--model", str(als_dir)])
    assert both.exit_code == 2


def test_demo_rejects_unknown_model(workdir):
    result = runner.invoke(app, ["--quiet", "demo", "--models", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_train_with_params_and_bad_params(workdir):
    ok = runner.invoke(app, ["--quiet", "train", "als", "-p", "factors=8", "-p", "iterations=2"])
    assert ok.exit_code == 0, ok.output
    assert (workdir / "artifacts" / "als" / "state.npz").exists()
    bad = runner.invoke(app, ["--quiet", "train", "als", "-p", "factors=0"])
    assert bad.exit_code == 2 and "factors" in bad.output
    unknown = runner.invoke(app, ["--quiet", "train", "nope"])
    assert unknown.exit_code == 2 and "available" in unknown.output


def test_train_the_hybrid_with_its_components(workdir):
    result = runner.invoke(app, ["--quiet", "train", "funnel_hybrid", "-p", "epochs=5",
                                 "-p", "max_training_examples=200"])
    assert result.exit_code == 0, result.output
    saved = workdir / "artifacts" / "funnel_hybrid"
    assert sorted(p.name for p in (saved / "components").iterdir()) == ["cf", "content", "popular", "session"]


def test_evaluate_missing_artifacts(workdir):
    result = runner.invoke(app, ["evaluate", "--artifacts", str(workdir / "none")])
    assert result.exit_code == 2 and "no saved models" in result.output
