"""Explanation cost per request: ``explain_batch`` + ``to_dict`` of a 10-item list, as served.

    .venv/bin/python benchmarks/explain_speed.py [--scales demo,full] [--requests 300] [--no-record]

The explainer is fitted on the scale's training split, saved and loaded back (what ``funnelrec
serve`` holds). Each request explains 10 items for one training visitor (funnel stages mixed) with
a hybrid's component weights, half of them with a live session of three items. The items are
neighbours of the visitor's own items in the co-occurrence lists, so every reason kind is built:
this is the expensive case, not a list of popular items. Target: a few ms of the 50 ms p99
budget of issue 17 item 9 (2 CPU cores). Run alone: two heavy jobs at once make the timings noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402
from baselines import latency_ms, load_split, table  # noqa: E402

from funnelrec.data.features.user_features import FUNNEL_STAGES, UserFeatureExtractor  # noqa: E402
from funnelrec.models.explainable.explainer import RecommendationExplainer  # noqa: E402

N_ITEMS = 10
WEIGHTS = {"popular": 0.02, "content": 0.01, "cf": 0.01, "session": 0.96}


def requests_for(explainer: RecommendationExplainer, stages: pd.Series, n: int, seed: int = 0) -> list[dict]:
    """``n`` requests: a visitor, 10 co-occurring items, and (every other one) a live session."""
    rng = np.random.default_rng(seed)
    per_stage = max(1, n // len(FUNNEL_STAGES))
    pool = np.concatenate([
        rng.choice(ids, min(per_stage, len(ids)), replace=False)
        for stage in FUNNEL_STAGES if len(ids := stages.index[stages.to_numpy() == stage].to_numpy())
    ])
    item_ids = explainer.item_map_.ids
    out = []
    for k, visitor in enumerate(pool.tolist()):
        row = int(explainer.visitor_map_.to_idx([visitor])[0])
        mine = explainer.views_[row].indices
        near = np.unique(explainer.co_view_[mine].indices)
        if len(near) < N_ITEMS:
            near = np.union1d(near, rng.choice(len(item_ids), N_ITEMS, replace=False))
        picked = rng.choice(near, N_ITEMS, replace=False)
        session = rng.choice(item_ids, 3).tolist() if k % 2 else None
        out.append({"visitor": visitor, "session": session,
                    "recs": [(int(item_ids[i]), 1.0 / (j + 1)) for j, i in enumerate(picked)]})
    return out


def measure(scale: str, n_requests: int) -> dict:
    train, _, _ = load_split(scale)
    features = UserFeatureExtractor().fit(train)
    started = time.perf_counter()
    fitted = RecommendationExplainer(features, train["item_id"].value_counts().to_dict()).fit(train)
    fit_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        explainer = RecommendationExplainer.load(fitted.save(Path(tmp) / "explainer"))
    requests = requests_for(explainer, features.features_["funnel_stage"], n_requests)

    def explain(request: dict) -> None:
        for exp in explainer.explain_batch(request["visitor"], request["recs"], "FunnelAwareHybrid",
                                           session_item_ids=request["session"], component_weights=WEIGHTS):
            exp.to_dict()

    for request in requests[:20]:  # warm-up
        explain(request)
    p50, p99 = latency_ms(explain, requests)
    row = {"scale": scale, "items": len(explainer.item_map_), "visitors": len(explainer.visitor_map_),
           "fit_s": fit_s, "requests": len(requests), "p50_ms": p50, "p99_ms": p99}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="demo,full")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    frame = pd.DataFrame([measure(scale, args.requests) for scale in args.scales.split(",")])
    body = (
        f"Per request: explain_batch of {N_ITEMS} items with the hybrid's component weights, then "
        "to_dict, on an explainer loaded from disk; half the requests carry a live session.\n\n"
        + table(frame, ["scale", "items", "visitors", "fit_s", "requests", "p50_ms", "p99_ms"])
    )
    headline = f"{N_ITEMS} items explained per request: " + ", ".join(
        f"{row.scale} p99 {row.p99_ms:.2f} ms (p50 {row.p50_ms:.2f})" for row in frame.itertuples(index=False))
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        append_results("Explanation cost per request", " ".join(["benchmarks/explain_speed.py", *sys.argv[1:]]), body,
                       headline)


if __name__ == "__main__":
    main()
