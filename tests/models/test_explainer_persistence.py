"""RecommendationExplainer.save / load: identical explanations, safe formats, atomic writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from artifact_tools import rewrite_state

from funnelrec.data.features.user_features import FunnelStage, UserFeatureExtractor
from funnelrec.models import PopularItemsRecommender
from funnelrec.models.base import ArtifactError, NotFittedError
from funnelrec.models.explainable.explainer import RecommendationExplainer

UNKNOWN_ITEM = 10**9


@pytest.fixture(scope="module")
def train(tiny_split):
    return tiny_split[0]


@pytest.fixture(scope="module")
def explainer(train) -> RecommendationExplainer:
    extractor = UserFeatureExtractor().fit(train)
    popularity = train["item_id"].value_counts().to_dict()
    names = {int(i): f"Product {i} \u2013 \u00e9t\u00e9" for i in train["item_id"].unique()[:20]}
    return RecommendationExplainer(
        user_feature_extractor=extractor, item_popularity=popularity, max_neighbors=20,
        evidence_scale=4.0, item_names=names,
    ).fit(train)


@pytest.fixture(scope="module")
def saved(explainer, tmp_path_factory) -> Path:
    return explainer.save(tmp_path_factory.mktemp("explainer") / "explainer")


@pytest.fixture(scope="module")
def cases(train, explainer):
    """(visitor, recommendations, session) triples: a visitor of every stage, plus a stranger."""
    stages = explainer.stages_.features_["funnel_stage"]
    visitors = [int(stages[stages == s].index[0]) for s in FunnelStage if (stages == s).any()]
    assert len(visitors) >= 3
    visitors.append(-12345)
    recs = PopularItemsRecommender().fit(train).recommend(visitors[0], n_items=8)
    pairs = list(recs) + [(UNKNOWN_ITEM, 0.5)]
    session = train["item_id"].iloc[:5].tolist()
    return [(v, pairs, s) for v in visitors for s in (None, session)]


def explanations(explainer: RecommendationExplainer, cases, **kwargs) -> list[dict]:
    return [
        e.to_dict()
        for visitor, pairs, session in cases
        for e in explainer.explain_batch(visitor, pairs, "Popular", session_item_ids=session, **kwargs)
    ]


def test_round_trip_gives_identical_explanations(explainer, saved, cases):
    loaded = RecommendationExplainer.load(saved)
    assert explanations(loaded, cases) == explanations(explainer, cases)
    weights = {"session": 0.6, "cf": 0.4}
    assert explanations(loaded, cases, component_weights=weights) == explanations(
        explainer, cases, component_weights=weights
    )


def test_loaded_state_and_parameters(explainer, saved, train):
    loaded = RecommendationExplainer.load(saved)
    assert (loaded.max_neighbors, loaded.evidence_scale) == (20, 4.0)
    assert loaded.item_names == explainer.item_names
    assert loaded.item_popularity == {int(k): int(v) for k, v in explainer.item_popularity.items()}
    assert loaded.user_feature_extractor is None
    assert loaded.item_map_ == explainer.item_map_ and loaded.visitor_map_ == explainer.visitor_map_
    for name in ("co_view_", "co_purchase_", "view_buy_", "views_", "carts_", "buys_", "last_session_views_"):
        assert (getattr(loaded, name) != getattr(explainer, name)).nnz == 0, name
    visitors = train["visitor_id"].unique()[:200].tolist() + [-1, 10**12]
    assert [loaded.stages_.get_stage(v) for v in visitors] == [
        explainer.stages_.get_stage(v) for v in visitors
    ]


def test_only_json_and_npz_without_pickle(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "state.npz"]
    config = json.loads((saved / "config.json").read_text())
    assert config["format_version"] == 1 and config["class"] == "RecommendationExplainer"
    assert "model" not in config  # the serving app does not mistake it for a model
    with np.load(saved / "state.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_a_loaded_explainer_saves_and_loads_again(saved, cases, tmp_path):
    loaded = RecommendationExplainer.load(saved)
    again = RecommendationExplainer.load(loaded.save(tmp_path / "again"))
    assert explanations(again, cases) == explanations(loaded, cases)


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda p: p.write_bytes(b"not an npz"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"),
        pytest.param(lambda p: p.unlink(), id="missing"),
    ],
)
def test_corrupted_npz_raises_artifact_error_naming_it(saved, tmp_path, corrupt):
    copy = copy_dir(saved, tmp_path / "copy")
    corrupt(copy / "state.npz")
    with pytest.raises(ArtifactError, match=str(copy / "state.npz")):
        RecommendationExplainer.load(copy)


def test_npz_with_an_array_missing_or_inconsistent(saved, tmp_path):
    copy = copy_dir(saved, tmp_path / "copy")
    with np.load(saved / "state.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    # consistency, not corruption: the checksums are recorded again after each rewrite
    rewrite_state(copy, lambda _: {k: v for k, v in arrays.items() if k != "co_view_indptr"})
    with pytest.raises(ArtifactError, match="co_view_indptr"):
        RecommendationExplainer.load(copy)
    rewrite_state(copy, lambda _: {**arrays, "popularity_": arrays["popularity_"][:-1]})
    with pytest.raises(ArtifactError, match="popularity_"):
        RecommendationExplainer.load(copy)


def test_corrupted_config_raises_artifact_error_naming_it(saved, tmp_path):
    copy = copy_dir(saved, tmp_path / "copy")
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=str(copy / "config.json")):
        RecommendationExplainer.load(copy)
    with pytest.raises(ArtifactError, match="does not exist"):
        RecommendationExplainer.load(tmp_path / "nowhere")


def test_newer_format_version_is_refused(saved, tmp_path):
    copy = copy_dir(saved, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["format_version"] = 2
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config\.json has format version 2, newer"):
        RecommendationExplainer.load(copy)


def test_failed_save_leaves_the_previous_one_intact(explainer, train, cases, tmp_path, monkeypatch):
    target = explainer.save(tmp_path / "explainer")
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    other = RecommendationExplainer(max_neighbors=2).fit(train.iloc[: len(train) // 2])

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail)  # config.json is written after state.npz
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explainer"]  # no temp folder left
    assert explanations(RecommendationExplainer.load(target), cases) == explanations(explainer, cases)


def test_failed_npz_write_leaves_the_previous_one_intact(explainer, train, tmp_path, monkeypatch):
    target = explainer.save(tmp_path / "explainer")
    before = (target / "state.npz").read_bytes()

    def fail(file, *args, **kwargs):
        Path(file).write_bytes(b"PK partial")
        raise zipfile.BadZipFile("interrupted")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(zipfile.BadZipFile):
        RecommendationExplainer(max_neighbors=2).fit(train).save(target)
    monkeypatch.undo()
    assert (target / "state.npz").read_bytes() == before


def test_save_before_fit_raises():
    with pytest.raises(NotFittedError):
        RecommendationExplainer().save("unused")
