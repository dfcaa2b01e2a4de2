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
    "session_knn": {},  # noqa: RUF100
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
    """Generate synthetic data into ``raw_dir`` unless an ``events.csv`` is already there."""
    raw_dir = Path(raw_dir) if raw_dir is not None else settings.raw_dir
    if (raw_dir / "events.csv").exists() or (raw_dir / "events.csv.gz").exists():
        return raw_dir
    from funnelrec.data.synthetic import generate_to_dir

    scale = scale or settings.demo_scale
    logger.info("No events in {}; generating synthetic '{}' data there", raw_dir, scale)
    generate_to_dir(raw_dir, scale=scale, seed=settings.random_seed if seed is None else seed)
    return raw_dir


def prepare_data(raw_dir: Path | None = None, min_session_length: int = 1) -> PreparedData:
    """Load, sessionise, keep sessions of ``min_session_length``+ events, split by time.

    The default keeps single-event sessions: they hold no next-item target, but they are most of
    the history of returning visitors, whom the visitor-holdout protocol evaluates.
    """
    from funnelrec.data.synthetic import describe

    loader = RetailRocketLoader(raw_dir)
    events = loader.load_events()
    builder = SessionBuilder(settings.session_timeout_minutes)
    events = builder.build_sessions(events)
    if min_session_length > 1:
        events = builder.filter_short_sessions(events, min_length=min_session_length)
    train, val, test = TimeBasedSplitter().split(events)
    return PreparedData(events, train, val, test, describe(events), loader.report.summary())


def build_model(key: str, **params: Any) -> Recommender:
    """A registered model by key with the given hyperparameters."""
    return get_model_class(key)(**params)


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
        model = build_model(key, **params)
        started = time.perf_counter()
        model.fit(data.train, val_events=data.val if model.sequential else None)
        outcome.fit_seconds[model.name] = time.perf_counter() - started
        outcome.models[key] = model
        result = evaluator.evaluate(model, data.train, data.test, n_items=20, max_users=max_users)
        result["fit_seconds"] = outcome.fit_seconds[model.name]
        rows.append(dict(result))
        session_rows.append(dict(evaluator.evaluate_sessions(model, data.test, cutoff=20,
                                                             max_events=max_session_events)))
        if artifacts_dir is not None:
            model.save(Path(artifacts_dir) / key)
    outcome.results = pd.DataFrame(rows)
    outcome.session_results = pd.DataFrame(session_rows)
    return outcome
