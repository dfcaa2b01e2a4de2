"""Every model of `funnelrec demo` on the demo data, both protocols, with the issues' checks.

Fits the models exactly as `funnelrec demo` does (``funnelrec.pipeline.fit_and_evaluate`` with
``DEMO_MODELS``; the hybrid reuses the fitted Popular / Item2Vec / ALS / SASRec and learns its
attention on the validation split), then checks:

- GRU4Rec and SASRec beat Popular and Item2Vec on evaluate_sessions MRR@20;
- SASRec beats ALS on evaluate ndcg@10;
- Two-Tower beats Popular on evaluate ndcg@10;
- the hybrid beats each of its components on evaluate ndcg@10 and evaluate_sessions MRR@20.

    .venv/bin/python benchmarks/demo_comparison.py [--no-record]
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
from baselines import CACHE, table  # noqa: E402

from funnelrec.evaluation.evaluator import Evaluator  # noqa: E402
from funnelrec.pipeline import DEMO_MODELS, HYBRID_COMPONENTS, fit_and_evaluate, prepare_data  # noqa: E402


def paired_details(outcome, data) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per-visitor and per-event metrics of every model (same seeded visitors, same events)."""
    evaluator = Evaluator(k_values=[5, 10, 20])
    evaluator.show_progress = False
    per_visitor, per_event = {}, {}
    for model in outcome.models.values():
        per_visitor[model.name] = evaluator.evaluate(model, data.train, data.test, n_items=20, max_users=2000,
                                                     return_details=True).details
        per_event[model.name] = evaluator.evaluate_sessions(model, data.test, cutoff=20,
                                                            return_details=True).details
    return per_visitor, per_event


def paired_bootstrap_ci(ours: pd.Series, ref: pd.Series, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(ours - ref) over the same visitors or events."""
    ours, ref = ours.align(ref, join="inner")
    diff = (ours.to_numpy() - ref.to_numpy()).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_resamples, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def comparison_headline(holdout: pd.DataFrame, sessions: pd.DataFrame, n_yes: int, n_yes_in_noise: int,
                        n_checks: int) -> str:
    """The two best models of each protocol, and how many checks hold (how many of those within noise)."""
    def top_two(frame: pd.DataFrame, metric: str) -> str:
        ranked = frame.sort_values(metric, ascending=False).head(2)
        (first, first_value), (second, second_value) = zip(ranked["model"], ranked[metric], strict=True)
        return f"{first} {first_value:.4f} best, {second} {second_value:.4f} next"

    return (f"nDCG@10: {top_two(holdout, 'ndcg@10')}; session MRR@20: {top_two(sessions, 'mrr@20')}; "
            f"checks {n_yes}/{n_checks} yes ({n_yes_in_noise} of them within noise)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    raw = CACHE / "demo"
    if not (raw / "events.csv").exists():
        subprocess.run([sys.executable, "-m", "funnelrec.cli", "--quiet", "generate", "--scale", "demo",
                        "--out", str(raw)], check=True)
    started = time.perf_counter()
    data = prepare_data(raw)
    outcome = fit_and_evaluate(data, DEMO_MODELS, max_users=2000, max_session_events=None)
    total = time.perf_counter() - started
    holdout = outcome.results.set_index("model")
    sessions = outcome.session_results.set_index("model")

    def ndcg(name: str) -> float:
        return float(holdout.loc[name, "ndcg@10"])

    def mrr(name: str) -> float:
        return float(sessions.loc[name, "mrr@20"])

    names = {key: model.name for key, model in outcome.models.items()}
    hybrid = names["funnel_hybrid"]
    checks = [
        (f"{names[a]} > {names[b]} on evaluate_sessions MRR@20", mrr(names[a]), mrr(names[b]))
        for a in ("gru4rec", "sasrec") for b in ("popular", "item2vec")
    ]
    checks += [
        ("SASRec > ALS on evaluate ndcg@10", ndcg(names["sasrec"]), ndcg(names["als"])),
        ("TwoTower > Popular on evaluate ndcg@10", ndcg(names["two_tower"]), ndcg(names["popular"])),
    ]
    for component in HYBRID_COMPONENTS.values():
        other = names[component]
        checks.append((f"hybrid > {other} on evaluate ndcg@10", ndcg(hybrid), ndcg(other)))
        checks.append((f"hybrid > {other} on evaluate_sessions MRR@20", mrr(hybrid), mrr(other)))
    per_visitor, per_event = paired_details(outcome, data)
    lines, n_yes, n_yes_in_noise = [], 0, 0
    for text, ours, ref in checks:
        first, _, rest = text.partition(" > ")
        second, _, protocol = rest.partition(" on ")
        first = hybrid if first == "hybrid" else first
        frame, metric = (per_visitor, "ndcg@10") if "ndcg" in protocol else (per_event, "mrr@20")
        low, high = paired_bootstrap_ci(frame[first][metric], frame[second][metric])
        verdict = "yes" if ours > ref else "NO"
        verdict += "" if low > 0 or high < 0 else " (within noise)"
        n_yes += ours > ref
        n_yes_in_noise += ours > ref and low <= 0 <= high
        lines.append(f"- {text}: {verdict} ({ours:.4f} vs {ref:.4f}, {100 * (ours / ref - 1):+.1f}%; "
                     f"paired 95% CI of the difference [{low:+.4f}, {high:+.4f}])")
    verdicts = "\n".join(lines)
    holdout_cols = ["model", "precision@10", "recall@10", "ndcg@10", "hit_rate", "mrr", "coverage", "fit_seconds"]
    session_cols = ["model", "recall@5", "recall@20", "mrr@5", "mrr@20", "coverage"]
    body = (
        f"Demo data: train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} events; "
        "models and hyperparameters of `funnelrec.pipeline.DEMO_MODELS` (what `make demo` runs); "
        f"whole run {total:.0f} s.\n\n"
        f"Visitor holdout (`evaluate`, {int(holdout['n_users'].iloc[0])} warm visitors, seen items excluded):\n\n"
        f"{table(outcome.results.sort_values('ndcg@10', ascending=False), holdout_cols)}\n\n"
        f"Next item in session (`evaluate_sessions`, all {int(sessions['n_events'].iloc[0]):,} test events):\n\n"
        f"{table(outcome.session_results.sort_values('mrr@20', ascending=False), session_cols)}\n\n"
        f"Hybrid attention weights for the test's first visitor with history: "
        f"{outcome.models['funnel_hybrid'].explain_weights(int(data.train['visitor_id'].iloc[0]))}\n\n"
        f"{verdicts}"
    )
    headline = comparison_headline(outcome.results, outcome.session_results, n_yes, n_yes_in_noise, len(checks))
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        append_results("All demo models on demo data", "python benchmarks/demo_comparison.py", body, headline)
    pd.set_option("display.width", 200)


if __name__ == "__main__":
    main()
