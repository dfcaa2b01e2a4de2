"""Baselines (Popular, ALS, Item2Vec, SessionKNN): accuracy on demo data, speed at full scale.

    .venv/bin/python benchmarks/baselines.py --part accuracy   # demo scale, both protocols
    .venv/bin/python benchmarks/baselines.py --part speed      # full scale (235k items)

Speed targets (2 cores): evaluate(max_users=2000) under 10 s for ALS; recommend() p99 under
5 ms for Popular/ALS/Item2Vec. Run alone: timings of two heavy jobs at once are noise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

from funnelrec.data.loaders.retailrocket import RetailRocketLoader  # noqa: E402
from funnelrec.data.processors.session_builder import SessionBuilder  # noqa: E402
from funnelrec.data.processors.splitter import TimeBasedSplitter  # noqa: E402
from funnelrec.evaluation import Evaluator  # noqa: E402
from funnelrec.pipeline import DEMO_MODELS, build_model  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
BASELINES = ["popular", "als", "item2vec", "session_knn"]


def load_split(scale: str):
    raw = CACHE / scale
    if not (raw / "events.csv").exists():
        subprocess.run([sys.executable, "-m", "funnelrec.cli", "--quiet", "generate", "--scale", scale,
                        "--out", str(raw)], check=True)
    events = SessionBuilder().build_sessions(RetailRocketLoader(raw).load_events())
    return TimeBasedSplitter(0.8, 0.1, 0.1).split(events)


def table(frame: pd.DataFrame, columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    rows = []
    for _, row in frame[columns].iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                 for v in row]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows)


def accuracy_headline(holdout: pd.DataFrame, sessions: pd.DataFrame, n_beat: int, n_checks: int) -> str:
    """The best model of each protocol against Popular, and how many beats-Popular checks hold."""
    best_visitor = holdout.loc[holdout["ndcg@10"].idxmax()]
    best_session = sessions.loc[sessions["mrr@20"].idxmax()]
    popular_visitor = holdout.loc[holdout.model == "Popular", "ndcg@10"].item()
    popular_session = sessions.loc[sessions.model == "Popular", "mrr@20"].item()
    return (
        f"nDCG@10: {best_visitor['model']} {best_visitor['ndcg@10']:.4f} best (Popular {popular_visitor:.4f}); "
        f"session MRR@20: {best_session['model']} {best_session['mrr@20']:.4f} best (Popular "
        f"{popular_session:.4f}); beats Popular: {n_beat}/{n_checks} checks"
    )


def accuracy(record: bool) -> None:
    train, _, test = load_split("demo")
    evaluator = Evaluator(k_values=[5, 10, 20])
    holdout, sessions = [], []
    for key in BASELINES:
        model = build_model(key, **DEMO_MODELS[key])
        started = time.perf_counter()
        model.fit(train)
        fit = time.perf_counter() - started
        h = dict(evaluator.evaluate(model, train, test, n_items=20, max_users=2000))
        h["fit_s"] = fit
        holdout.append(h)
        sessions.append(dict(evaluator.evaluate_sessions(model, test, cutoff=20)))
        print(f"{model.name}: ndcg@10 {h['ndcg@10']:.4f}  MRR@20 {sessions[-1]['mrr@20']:.4f}", flush=True)
    holdout, sessions = pd.DataFrame(holdout), pd.DataFrame(sessions)
    pop_ndcg = holdout.loc[holdout.model == "Popular", "ndcg@10"].item()
    pop_mrr = sessions.loc[sessions.model == "Popular", "mrr@20"].item()
    checks = [
        ("ALS", "evaluate ndcg@10", holdout.loc[holdout.model == "ALS", "ndcg@10"].item(), pop_ndcg),
        ("Item2Vec", "evaluate ndcg@10", holdout.loc[holdout.model == "Item2Vec", "ndcg@10"].item(), pop_ndcg),
        ("SessionKNN", "evaluate_sessions MRR@20",
         sessions.loc[sessions.model == "SessionKNN", "mrr@20"].item(), pop_mrr),
        ("Item2Vec", "evaluate_sessions MRR@20",
         sessions.loc[sessions.model == "Item2Vec", "mrr@20"].item(), pop_mrr),
    ]
    verdict = [
        f"- {m} beats Popular on {proto}: {'yes' if v > ref else 'NO'} ({v:.4f} vs {ref:.4f})"
        for m, proto, v, ref in checks
    ]
    body = (
        f"Demo data: train {len(train):,} / test {len(test):,} events; hyperparameters of "
        "`funnelrec.pipeline.DEMO_MODELS`; full-catalogue ranking, ties against the model.\n\n"
        f"Visitor holdout (`evaluate`, {int(holdout['n_users'].iloc[0])} warm visitors, seen items "
        f"excluded):\n\n{table(holdout, ['model', 'precision@10', 'recall@10', 'ndcg@10', 'hit_rate', 'mrr', 'coverage', 'fit_s'])}\n\n"
        f"Next item in session (`evaluate_sessions`, {int(sessions['n_events'].iloc[0]):,} events, "
        f"{int(sessions['n_events_unknown_target'].iloc[0])} with a target unknown to the models):\n\n"
        f"{table(sessions, ['model', 'recall@5', 'recall@20', 'mrr@5', 'mrr@20', 'coverage'])}\n\n"
        + "\n".join(verdict)
    )
    headline = accuracy_headline(holdout, sessions, sum(v > ref for _, _, v, ref in checks), len(checks))
    print(f"{body}\n\nheadline: {headline}")
    if record:
        append_results("Baselines: accuracy on demo data", "python benchmarks/baselines.py --part accuracy", body,
                       headline)


def latency_ms(fn, calls: list) -> tuple[float, float]:
    times = []
    for arg in calls:
        started = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def speed_headline(frame: pd.DataFrame) -> str:
    """ALS's evaluate time and every model's recommend p99, each against its target."""
    by_model = frame.set_index("model")
    als_s = float(by_model.loc["ALS", "evaluate_2000_s"])
    p99 = ", ".join(f"{model} {ms:.2f}" for model, ms in by_model["recommend_p99_ms"].items())
    fast = by_model.loc[by_model.index.isin(["Popular", "ALS", "Item2Vec"]), "recommend_p99_ms"]
    return (
        f"ALS evaluate(2,000 visitors) {als_s:.2f} s (target < 10 s: {'met' if als_s < 10 else 'NOT met'}); "
        f"recommend p99 {p99} ms (target < 5 ms for Popular/ALS/Item2Vec: "
        f"{'met' if (fast < 5).all() else 'NOT met'})"
    )


def speed(record: bool) -> None:
    train, _, test = load_split("full")
    evaluator = Evaluator(k_values=[5, 10, 20])
    rng = np.random.default_rng(0)
    visitors = rng.choice(train["visitor_id"].unique(), 500, replace=False)
    rows = []
    for key in BASELINES:
        model = build_model(key, **DEMO_MODELS[key])
        started = time.perf_counter()
        model.fit(train)
        fit = time.perf_counter() - started
        model.recommend(int(visitors[0]), 10)  # warm-up
        p50, p99 = latency_ms(lambda v, m=model: m.recommend(int(v), 10), visitors.tolist())
        started = time.perf_counter()
        evaluator.evaluate(model, train, test, n_items=20, max_users=2000)
        eval_s = time.perf_counter() - started
        sessions = evaluator.evaluate_sessions(model, test, cutoff=20, max_events=10_000)
        rows.append({"model": model.name, "fit_s": fit, "evaluate_2000_s": eval_s,
                     "evaluate_sessions_events_per_s": sessions["n_events"] / sessions["seconds"],
                     "recommend_p50_ms": p50, "recommend_p99_ms": p99})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    body = (
        f"Full scale: train {len(train):,} events, {train['item_id'].nunique():,} items, "
        f"{train['visitor_id'].nunique():,} visitors. `recommend` latency over 500 random training "
        "visitors (n_items=10, seen items excluded); `evaluate_sessions` on a 10,000-event sample.\n\n"
        f"{table(frame, list(frame.columns))}\n\n"
        "Targets: ALS evaluate(max_users=2000) < 10 s; recommend p99 < 5 ms for Popular/ALS/Item2Vec."
    )
    headline = speed_headline(frame)
    print(f"{body}\n\nheadline: {headline}")
    if record:
        append_results("Baselines: speed at full scale", "python benchmarks/baselines.py --part speed", body, headline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["accuracy", "speed", "all"], default="all")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.part in ("accuracy", "all"):
        accuracy(not args.no_record)
    if args.part in ("speed", "all"):
        speed(not args.no_record)


if __name__ == "__main__":
    main()
