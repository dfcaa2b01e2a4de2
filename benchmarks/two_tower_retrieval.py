"""Two-Tower retrieval: FAISS at RetailRocket scale, and Two-Tower vs Popular on the demo data.

(a) FAISS: 235,061 x 64-d float32 vectors (RetailRocket's catalogue size), clustered random
    unit vectors (1,669 "categories", Zipf-sized, like the synthetic catalogue) since training a
    Two-Tower at full scale just to get its item matrix is not cheap. Exact and approximate
    (HNSW, IVF) indexes: build time and memory, recall@20 of the approximate ones against exact
    search, single-query latency (p50/p99) and batch throughput, on ``--threads`` FAISS threads.
    Targets: recall@20 >= 0.95, p99 < 5 ms.
(b) Demo data (``generate('demo')`` -> sessions -> sessions of >= 2 events -> 0.8/0.1/0.1 time
    split): TwoTower vs Popular on ``Evaluator().evaluate`` (warm visitors, seen items
    excluded, full catalogue, conservative ties) and on cold start: visitors first seen in the
    test period, known only by their first test session, which goes to
    ``recommend_by_item_ids``. Two truths: the rest of that session after its first half, and
    the items of the visitor's later test sessions; the input items are excluded from the
    ranking and from the truth; truth items unknown to the model count as misses.

    .venv/bin/python benchmarks/two_tower_retrieval.py [--part a|b|all] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

N_ITEMS, DIM, N_CLUSTERS = 235_061, 64, 1_669


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1024**2


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- (a) FAISS
def clustered_unit_vectors(n: int, dim: int, n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.choice(n_clusters, n, p=sizes / sizes.sum())
    spread = rng.uniform(0.05, 0.2, n_clusters).astype(np.float32)[labels, None]
    vectors = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def faiss_headline(table: pd.DataFrame, target_recall: float = 0.95) -> str:
    """The fastest approximate index (p99) that reaches ``target_recall``, else the most accurate one."""
    approximate = table[~table["index"].str.startswith("exact")]
    good = approximate[approximate["recall@20"] >= target_recall]
    if len(good):
        pick, why = good.loc[good["p99 ms"].idxmin()], f"fastest with recall@20 >= {target_recall:g}"
    else:
        pick, why = approximate.loc[approximate["recall@20"].idxmax()], f"best recall; none reaches {target_recall:g}"
    return f"FAISS {pick['index']}: recall@20 {pick['recall@20']:.3f}, p99 {pick['p99 ms']:.2f} ms ({why})"


def part_a(threads: int, n_queries: int = 2000, n_latency: int = 1000) -> tuple[str, str]:
    """Part (a): its section of the body and its part of the headline."""
    from funnelrec.models.base import top_k
    from funnelrec.models.retrieval.index import VectorIndex

    vectors = clustered_unit_vectors(N_ITEMS, DIM, N_CLUSTERS, seed=0)
    rng = np.random.default_rng(1)
    # queries: noisy copies of catalogue vectors (a visitor near what they looked at)
    queries = vectors[rng.choice(N_ITEMS, n_queries, replace=False)]
    queries = queries + 0.1 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.concatenate([top_k(queries[lo : lo + 256] @ vectors.T, 20)[0] for lo in range(0, n_queries, 256)])

    configs = [
        ("exact (IndexFlatIP)", {"kind": "exact"}),
        ("HNSW M=32 efC=200 efS=128", {"kind": "hnsw", "hnsw_m": 32, "ef_construction": 200, "ef_search": 128}),
        ("HNSW M=32 efC=200 efS=64", {"kind": "hnsw", "hnsw_m": 32, "ef_construction": 200, "ef_search": 64}),
        ("IVF nlist=1939 nprobe=32", {"kind": "ivf", "nprobe": 32}),
        ("IVF nlist=1939 nprobe=64", {"kind": "ivf", "nprobe": 64}),
    ]
    rows = []
    built: dict[str, VectorIndex] = {}
    for label, params in configs:
        key = json.dumps({k: v for k, v in params.items() if k not in ("ef_search", "nprobe")})
        before = rss_mb()
        started = time.perf_counter()
        if key in built:  # same structure, other search parameter: reuse the built index
            index = built[key]
            build_s, mem = float("nan"), float("nan")
            if "ef_search" in params:
                index.ef_search = params["ef_search"]
            if "nprobe" in params:
                index.index_.nprobe = params["nprobe"]
        else:
            index = VectorIndex(n_threads=threads, **params).build(vectors)
            build_s = time.perf_counter() - started
            mem = rss_mb() - before
            built[key] = index
        index.n_threads = threads
        idx, _ = index.search(queries, 20)
        recall = float(np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(idx, truth, strict=True)]))
        # single-query latency
        lat = []
        for q in queries[:n_latency]:
            t0 = time.perf_counter()
            index.search(q[None, :], 20)
            lat.append(time.perf_counter() - t0)
        lat_ms = np.array(lat) * 1000
        # batch throughput
        t0 = time.perf_counter()
        index.search(queries, 20)
        qps = n_queries / (time.perf_counter() - t0)
        rows.append({
            "index": label, "build s": build_s, "memory MB": mem, "recall@20": recall,
            "p50 ms": float(np.percentile(lat_ms, 50)), "p99 ms": float(np.percentile(lat_ms, 99)),
            "batch queries/s": qps,
        })
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    body = (
        f"(a) FAISS over {N_ITEMS:,} x {DIM} clustered random unit vectors ({N_CLUSTERS:,} Zipf-sized "
        f"clusters; not a trained item matrix), {n_queries:,} queries (noisy catalogue vectors), "
        f"{threads} FAISS threads. Memory: RSS growth while building (vectors themselves: "
        f"{vectors.nbytes / 1024**2:.0f} MB; the index keeps a copy for the exact fallback). Recall@20 against "
        "exact search; latency of one query per call over "
        f"{n_latency:,} calls (Python wrapper included); throughput of one {n_queries:,}-query batch. "
        "Empty cells: the same index as the row above, another search parameter.\n\n"
        + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".3f", missingval="")
    )
    return body, faiss_headline(table)


# --------------------------------------------------------------------------- (b) demo data
def demo_split():
    from funnelrec.data.processors.session_builder import SessionBuilder
    from funnelrec.data.processors.splitter import TimeBasedSplitter
    from funnelrec.data.synthetic import generate

    builder = SessionBuilder()
    events = builder.build_sessions(generate("demo").canonical_events(with_sessions=False))
    events = builder.filter_short_sessions(events, 2)
    return TimeBasedSplitter(0.8, 0.1, 0.1).split(events)


def cold_start_cases(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame):
    """``(inputs, truth_rest, inputs_later, truth_later)`` lists of item id lists."""
    seen_before = np.union1d(train["visitor_id"].unique(), val["visitor_id"].unique())
    cold = test[~test["visitor_id"].isin(seen_before)]
    cold = cold.sort_values(["visitor_id", "timestamp", "session_id"], kind="stable")
    first_session = cold.groupby("visitor_id")["session_id"].transform("first")
    in_first = (cold["session_id"] == first_session).to_numpy()
    first = cold[in_first].groupby("visitor_id", sort=True)["item_id"].agg(list)
    later = cold[~in_first].groupby("visitor_id", sort=True)["item_id"].agg(list)
    rest_inputs, rest_truth = [], []
    for items in first:
        distinct = list(dict.fromkeys(items))
        if len(distinct) < 2:
            continue
        half = (len(items) + 1) // 2
        inputs = items[:half]
        truth = sorted(set(items[half:]) - set(inputs))
        if truth:
            rest_inputs.append(inputs)
            rest_truth.append(truth)
    later_inputs, later_truth = [], []
    for visitor, items in later.items():
        inputs = first[visitor]
        truth = sorted(set(items) - set(inputs))
        if truth:
            later_inputs.append(inputs)
            later_truth.append(truth)
    return rest_inputs, rest_truth, later_inputs, later_truth, int(cold["visitor_id"].nunique())


def cold_start_metrics(model, inputs, truths, k: int = 10) -> dict[str, float]:
    hits, recalls, rr, fallback = [], [], [], 0
    for items, truth in zip(inputs, truths, strict=True):
        recs = model.recommend_by_item_ids(items, n_items=k, exclude_session_items=True)
        fallback += recs.is_fallback
        got = recs.item_ids
        hit = [i for i, item in enumerate(got) if item in set(truth)]
        hits.append(bool(hit))
        recalls.append(len(hit) / min(len(truth), k))
        rr.append(1.0 / (hit[0] + 1) if hit else 0.0)
    return {f"hit@{k}": float(np.mean(hits)), f"recall@{k}": float(np.mean(recalls)),
            f"mrr@{k}": float(np.mean(rr)), "fallback share": fallback / max(len(inputs), 1)}


def demo_headline(table: pd.DataFrame) -> str:
    """TwoTower against Popular, warm (nDCG@10) and cold (hit@10 on the rest of the first session)."""
    by_model = table.set_index("model")
    tt, pop = by_model.loc["TwoTower"], by_model.loc["Popular"]
    return (f"demo: TwoTower warm nDCG@10 {tt['warm ndcg@10']:.4f} vs Popular {pop['warm ndcg@10']:.4f}, "
            f"cold rest-of-session hit@10 {tt['cold rest hit@10']:.4f} vs {pop['cold rest hit@10']:.4f}")


def part_b(model_kwargs: dict) -> tuple[str, str]:
    """Part (b): its section of the body and its part of the headline."""
    from funnelrec.evaluation import Evaluator
    from funnelrec.models.baselines.popular import PopularItemsRecommender
    from funnelrec.models.retrieval.two_tower import TwoTowerRecommender

    model_kwargs = dict(model_kwargs)
    validate = bool(model_kwargs.pop("validate", False))
    started = time.perf_counter()
    train, val, test = demo_split()
    print(f"split: {len(train):,} / {len(val):,} / {len(test):,} events ({time.perf_counter() - started:.1f}s)")
    rest_in, rest_truth, later_in, later_truth, n_cold = cold_start_cases(train, val, test)
    print(f"cold visitors {n_cold:,}: {len(rest_in):,} rest-of-session cases, {len(later_in):,} later-session cases")
    models = {
        "Popular": PopularItemsRecommender(),
        "TwoTower": TwoTowerRecommender(show_progress=False, **model_kwargs),
    }
    rows = []
    evaluator = Evaluator()
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(train, val if name == "TwoTower" and validate else None)
        fit_s = time.perf_counter() - t0
        warm = evaluator.evaluate(model, train, test, max_users=None)
        rest = cold_start_metrics(model, rest_in, rest_truth)
        later = cold_start_metrics(model, later_in, later_truth)
        row = {
            "model": name, "fit s": fit_s, "warm ndcg@10": warm["ndcg@10"], "warm hit@10": warm["hit_rate@10"],
            "warm users": warm["n_users"], "cold rest hit@10": rest["hit@10"],
            "cold rest recall@10": rest["recall@10"], "cold rest mrr@10": rest["mrr@10"],
            "cold later hit@10": later["hit@10"], "cold later recall@10": later["recall@10"],
            "cold fallback share": rest["fallback share"],
        }
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    kwargs = ", ".join(f"{k}={v!r}" for k, v in model_kwargs.items())
    return (
        f"(b) Demo data ({len(train):,} / {len(val):,} / {len(test):,} train/val/test events, sessions "
        f">= 2 events). TwoTower({kwargs}). Warm: `Evaluator().evaluate` over every warm visitor "
        f"(seen items excluded, full catalogue, ties against the model). Cold: {n_cold:,} visitors first "
        f"seen in test; 'rest' = first half of their first test session -> the rest of it "
        f"({len(rest_in):,} cases); 'later' = their whole first session -> items of their later test "
        f"sessions ({len(later_in):,} cases); inputs excluded from ranking and truth.\n\n"
        + table.to_markdown(index=False, floatfmt=".4f")
    ), demo_headline(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="{}", help="TwoTower kwargs as JSON (part b)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    import torch

    torch.set_num_threads(args.threads)
    model_kwargs = {"seed": 42, **json.loads(args.model)}
    parts = []
    if args.part in ("a", "all"):
        parts.append(part_a(args.threads))
    if args.part in ("b", "all"):
        parts.append(part_b(model_kwargs))
    body = "\n\n".join(section for section, _ in parts) + f"\n\nPeak RSS of the run: {peak_rss_mb():,.0f} MB."
    headline = "; ".join(figure for _, figure in parts)
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        command = "python benchmarks/two_tower_retrieval.py " + " ".join(sys.argv[1:])
        append_results("Two-Tower retrieval: FAISS at full scale, TwoTower vs Popular", command.strip(), body,
                       headline)


if __name__ == "__main__":
    main()
