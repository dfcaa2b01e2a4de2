"""The main job: data -> sessions -> split -> models -> both evaluations -> tables and artifacts.

``funnelrec demo`` runs :func:`run_demo`; ``funnelrec evaluate`` and ``recommend`` reuse
:func:`prepare_data` so saved models meet exactly the split they were trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from loguru import logger

from funnelrec.config import settings
from funnelrec.data.loaders.retailrocket import RetailRocketLoader
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.processors.splitter import TimeBasedSplitter
from funnelrec.evaluation.evaluator import Evaluator
from funnelrec.models.base import Recommender, get_model_class

#: Models of the demo with hyperparameters that train in seconds to minutes on 2 cores.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "popular": {},
    "als": {"factors": 64, "iterations": 10},
    "item2vec": {"embedding_dim": 64, "window": 5, "epochs": 20},
    "session_knn": {},
    # the official training scheme's optimiser and tied embeddings (Hidasi & Czapp 2023)
    # (on YOOCHOOSE-100k: Recall@20 0.691, MRR@20 0.363 over 5 seeds, benchmarks/RESULTS.md)
    "gru4rec": {"hidden_dim": 128, "optimizer": "adagrad", "learning_rate": 0.1, "constrained_embedding": True,
                "batch_size": 512, "n_sample": 2048, "dropout": 0.2, "epochs": 5},
    # sampled softmax with 2048 negatives: ~3x faster than the full softmax on the demo catalogue,
    # as accurate; dropout 0.4: less fitting of in-session successors, more of visitors' taste
    # (evaluate nDCG@10 over 3 seeds 0.085 vs 0.079 at 0.2, session MRR@20 0.286 vs 0.291)
    "sasrec": {"hidden_dim": 64, "n_heads": 2, "n_layers": 2, "max_seq_length": 50, "dropout": 0.4,
               "learning_rate": 0.002, "batch_size": 512, "epochs": 10, "loss_type": "sampled",
               "n_negatives": 2048},
    "two_tower": {"embedding_dim": 64, "hidden_dims": [128, 64], "dropout": 0.2, "temperature": 0.1,
                  "learning_rate": 0.001, "batch_size": 1024, "epochs": 5, "negative_samples": 4},
    "funnel_hybrid": {},
}

#: The hybrid's components (role -> model key), as in the seed notebook's section 6.
HYBRID_COMPONENTS: dict[str, str] = {
    "popular_model": "popular",
    "content_model": "item2vec",
    "cf_model": "als",
    "session_model": "sasrec",
}


@dataclass
class PreparedData:
    """Everything the models and evaluations need, made once."""

    events: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    description: pd.Series
    load_report: str = ""
    category_tree: pd.DataFrame | None = None
    id_maps: dict[str, pd.Index] = field(default_factory=dict)
    """Text ids the loader encoded (``string_ids``): role -> ids, code = position."""


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    data: PreparedData
    models: dict[str, Recommender] = field(default_factory=dict)
    results: pd.DataFrame = field(default_factory=pd.DataFrame)
    session_results: pd.DataFrame = field(default_factory=pd.DataFrame)
    fit_seconds: dict[str, float] = field(default_factory=dict)
    results_path: Path | None = None
    artifacts_dir: Path | None = None
    seconds: float = 0.0


def ensure_data(raw_dir: Path | None = None, scale: str | None = None, seed: int | None = None) -> Path:
    """Generate synthetic data into ``raw_dir`` unless an ``events.csv`` is already there
    (``raw_dir`` may also be an events file: your own data, never replaced)."""
    raw_dir = Path(raw_dir) if raw_dir is not None else settings.raw_dir
    if raw_dir.is_file() or (raw_dir / "events.csv").exists() or (raw_dir / "events.csv.gz").exists():
        return raw_dir
    from funnelrec.data.synthetic import generate_to_dir

    scale = scale or settings.demo_scale
    logger.info("No events in {}; generating synthetic '{}' data there", raw_dir, scale)
    generate_to_dir(raw_dir, scale=scale, seed=settings.random_seed if seed is None else seed)
    return raw_dir


def synthetic_dir(scale: str, seed: int | None = None) -> Path:
    """Where ``funnelrec demo --scale SCALE`` keeps its synthetic data:
    ``<data_dir>/synthetic/<scale>-seed<seed>`` (``seed``: ``settings.random_seed`` by default).

    Apart from ``raw_dir``, so that asking for a scale never overwrites (or silently reuses) the
    data in ``data/raw``, real or synthetic; keyed by the seed too, so that another
    ``FUNNELREC_RANDOM_SEED`` gets its own data instead of the last seed's.
    """
    return settings.data_dir / "synthetic" / f"{scale}-seed{settings.random_seed if seed is None else seed}"


def prepare_data(
    raw_dir: Path | None = None, min_session_length: int = 1, loader_options: dict[str, Any] | None = None
) -> PreparedData:
    """Load, sessionise, keep sessions of ``min_session_length``+ events, split by time.

    ``raw_dir`` is the data folder or an events file; ``loader_options`` go to
    :class:`RetailRocketLoader` (``columns``, ``string_ids``, ``timestamp_unit``,
    ``max_dropped_share``, ``events_file``). Bad data raises :class:`~funnelrec.errors.DataError`
    (a missing file :class:`FileNotFoundError`). The default keeps single-event sessions: they
    hold no next-item target, but they are most of the history of returning visitors, whom the
    visitor-holdout protocol evaluates.
    """
    from funnelrec.data.synthetic import describe

    loader = RetailRocketLoader(raw_dir, **(loader_options or {}))
    events = loader.load_events()
    builder = SessionBuilder(settings.session_timeout_minutes)
    events = builder.build_sessions(events)
    if min_session_length > 1:
        events = builder.filter_short_sessions(events, min_length=min_session_length)
    train, val, test = TimeBasedSplitter().split(events)
    try:
        tree = loader.load_category_tree()
    except FileNotFoundError:
        tree = None
    return PreparedData(events, train, val, test, describe(events), loader.report.summary(), tree,
                        loader.id_maps)


def build_model(key: str, fitted: dict[str, Recommender] | None = None, **params: Any) -> Recommender:
    """A registered model by key; the hybrid takes its components from ``fitted`` when there."""
    if key == "funnel_hybrid":
        fitted = fitted or {}
        for role, component_key in HYBRID_COMPONENTS.items():
            params.setdefault(role, fitted.get(component_key) or get_model_class(component_key)(
                **DEMO_MODELS.get(component_key, {})))
    return get_model_class(key)(**params)


def fit_model(model: Recommender, data: PreparedData) -> Recommender:
    """Fit on the train split; sequence models (early stopping) and the hybrid (its attention)
    also get the validation split, which no model ever sees as training data otherwise."""
    from funnelrec.models import FunnelAwareHybridRecommender

    uses_val = model.sequential or isinstance(model, FunnelAwareHybridRecommender)
    return model.fit(data.train, val_events=data.val if uses_val else None)


def fit_and_evaluate(
    data: PreparedData,
    model_specs: dict[str, dict[str, Any]],
    *,
    evaluator: Evaluator | None = None,
    max_users: int = 2000,
    max_session_events: int | None = 20_000,
    artifacts_dir: Path | None = None,
) -> DemoResult:
    """Fit each model on train (val for early stopping), evaluate with both protocols."""
    evaluator = evaluator or Evaluator(k_values=[5, 10, 20])
    outcome = DemoResult(data=data, artifacts_dir=artifacts_dir)
    rows, session_rows = [], []
    for key, params in model_specs.items():
        model = build_model(key, outcome.models, **params)
        started = time.perf_counter()
        fit_model(model, data)
        outcome.fit_seconds[model.name] = time.perf_counter() - started
        outcome.models[key] = model
        row, session_row = evaluate_model(model, data, evaluator=evaluator, max_users=max_users,
                                          max_session_events=max_session_events)
        row["fit_seconds"] = outcome.fit_seconds[model.name]
        rows.append(row)
        session_rows.append(session_row)
        if artifacts_dir is not None:
            model.save(Path(artifacts_dir) / key)
    outcome.results = pd.DataFrame(rows)
    outcome.session_results = pd.DataFrame(session_rows)
    return outcome


def evaluate_model(
    model: Recommender,
    data: PreparedData,
    *,
    evaluator: Evaluator | None = None,
    max_users: int = 2000,
    max_session_events: int | None = 20_000,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both protocols on the test split, as the demo runs them: ``(visitor row, session row)``."""
    evaluator = evaluator or Evaluator(k_values=[5, 10, 20])
    row = dict(evaluator.evaluate(model, data.train, data.test, n_items=20, max_users=max_users))
    session_row = dict(evaluator.evaluate_sessions(model, data.test, cutoff=20, max_events=max_session_events))
    return row, session_row


def evaluate_models(
    models: dict[str, Recommender],
    data: PreparedData,
    *,
    max_users: int = 2000,
    max_session_events: int | None = 20_000,
    fit_seconds: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_model` for saved models: ``(results, session_results)`` frames, one row each.

    ``fit_seconds`` (model key -> seconds, as a run's ``run.json`` records them) fills the
    ``fit_seconds`` column where known.
    """
    evaluator = Evaluator(k_values=[5, 10, 20])
    rows, session_rows = [], []
    for key, model in models.items():
        row, session_row = evaluate_model(model, data, evaluator=evaluator, max_users=max_users,
                                          max_session_events=max_session_events)
        if fit_seconds and key in fit_seconds:
            row["fit_seconds"] = float(fit_seconds[key])
        rows.append(row)
        session_rows.append(session_row)
    return pd.DataFrame(rows), pd.DataFrame(session_rows)


def fit_explainer(data: PreparedData):
    """The demo's explainer, fitted on the train split (funnel stages, co-occurrence, popularity)."""
    from funnelrec.data.features.user_features import UserFeatureExtractor
    from funnelrec.models.explainable.explainer import RecommendationExplainer

    started = time.perf_counter()
    features = UserFeatureExtractor().fit(data.train)
    explainer = RecommendationExplainer(features, data.train["item_id"].value_counts().to_dict()).fit(data.train)
    logger.info("Explainer fitted in {:.1f}s", time.perf_counter() - started)
    return explainer


def sample_explanations(
    data: PreparedData,
    model: Recommender,
    explainer,
    *,
    n_items: int = 5,
    per_stage: int = 1,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Explained recommendations for sample visitors, one (or ``per_stage``) per funnel stage.

    Visitors are drawn (seeded) from the training period so the explanations have history to cite;
    a brand-new visitor with a live session stands for the ``new`` stage.
    """
    import numpy as np

    from funnelrec.data.features.user_features import FUNNEL_STAGES, UserFeatureExtractor

    rng = np.random.default_rng(settings.random_seed if seed is None else seed)
    features = explainer.user_feature_extractor if getattr(explainer, "user_feature_extractor", None) else \
        UserFeatureExtractor().fit(data.train)
    stages = features.features_["funnel_stage"]
    out: list[dict[str, Any]] = []
    for stage in FUNNEL_STAGES:
        if stage == "new":
            session = data.test.loc[data.test["session_id"] == data.test["session_id"].iloc[0], "item_id"]
            visitors, live = [None], session.tolist()[:3]
        else:
            pool = stages.index[stages.to_numpy() == stage].to_numpy()
            if len(pool) == 0:
                continue
            visitors, live = rng.choice(pool, min(per_stage, len(pool)), replace=False).tolist(), None
        for visitor in visitors:
            if visitor is None:
                # shown to a person: not the items they are looking at right now
                recs = model.recommend_by_item_ids(live, n_items=n_items, exclude_session_items=True)
            else:
                recs = model.recommend(int(visitor), n_items=n_items)
            explanations = explainer.explain_batch(
                user_id=explainer.anonymous_visitor_id if visitor is None else int(visitor),
                recommendations=recs, model_name=model.name,
                session_item_ids=live, component_weights=getattr(recs, "component_weights", None),
            )
            out.append({
                "visitor_id": None if visitor is None else int(visitor),
                "funnel_stage": stage,
                "model": model.name,
                "session_item_ids": live,
                "items": [
                    {"item_id": e.item_id, "score": e.score, "summary": e.get_summary(),
                     "reasons": [r.text for r in e.reasons], "confidence": e.confidence}
                    for e in explanations
                ],
            })
    return out
