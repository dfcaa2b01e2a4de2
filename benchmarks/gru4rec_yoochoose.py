"""GRU4Rec next-item accuracy on the YOOCHOOSE-100k sample with the official RSC15 settings.

Trains on ``train_full.tsv``, predicts every next item of every session of ``test.tsv`` from its
prefix, ranking the full training catalogue; ties are counted AGAINST the model
(``rank = #(scores >= target score)``). Test events whose item is unknown to the model are counted
and reported (and, as in the official evaluation, left out of the sessions).

The reference: the official implementation reaches Recall@20 0.664 and MRR@20 0.353 on RSC15
with these settings (Hidasi & Czapp, RecSys 2023; its ties count in the model's favour).

Usage::

    .venv/bin/python benchmarks/gru4rec_yoochoose.py [--epochs 10] [--threads 2] [--no-append]
        [--param name=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from funnelrec.data.encoding import expand_prefixes, sequences_from_sorted
from funnelrec.data.schema import to_canonical
from funnelrec.models.sequential.gru4rec import GRU4RecRecommender

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "yoochoose-100k"
CUTOFF = 20
SCORE_ROWS = 1024

#: The official GRU4Rec parameter file for RSC15 with cross-entropy (shared embedding).
OFFICIAL_RSC15_CE = {
    "loss_type": "ce",
    "logq": 1.0,
    "constrained_embedding": True,
    "embedding_dim": 0,
    "elu_param": 0.0,
    "hidden_dim": 100,
    "n_layers": 1,
    "epochs": 10,
    "batch_size": 32,
    "dropout_p_embed": 0.1,
    "dropout": 0.0,
    "learning_rate": 0.1,
    "momentum": 0.0,
    "n_sample": 512,
    "sample_alpha": 0.75,
    "bpreg": 0.0,
    "optimizer": "adagrad",
}


def read_tsv(path: Path) -> pd.DataFrame:
    """The GRU4Rec TSV (SessionId, ItemId, Time in unix seconds) as canonical events."""
    raw = pd.read_csv(path, sep="\t", dtype={"SessionId": "int64", "ItemId": "int64", "Time": "float64"})
    frame = pd.DataFrame({
        "timestamp": np.round(raw["Time"].to_numpy() * 1000).astype(np.int64),
        "visitor_id": raw["SessionId"].to_numpy(),
        "event": "view",
        "item_id": raw["ItemId"].to_numpy(),
        "session_id": raw["SessionId"].to_numpy(),
    })
    return to_canonical(frame)


def evaluate(model: GRU4RecRecommender, test: pd.DataFrame) -> dict[str, float]:
    """Recall@20 and MRR@20 of every next item of every test session (full ranking)."""
    ts = test["timestamp"].to_numpy()
    sessions = test["session_id"].to_numpy()
    order = np.lexsort((ts, sessions))
    idx = model.item_map_.to_idx(test["item_id"].to_numpy()[order])
    known = idx >= 0
    seqs = sequences_from_sorted(sessions[order][known], idx[known])
    prefixes, targets, _ = expand_prefixes(seqs)
    rank_against = np.empty(len(targets), dtype=np.int64)
    rank_favour = np.empty(len(targets), dtype=np.int64)
    for lo in range(0, len(targets), SCORE_ROWS):
        rows = np.arange(lo, min(lo + SCORE_ROWS, len(targets)))
        scores = model.score_sessions(prefixes.take(rows))
        target_scores = scores[np.arange(len(rows)), targets[rows]][:, None]
        rank_against[rows] = (scores >= target_scores).sum(axis=1)  # ties against the model
        rank_favour[rows] = (scores > target_scores).sum(axis=1) + 1  # official: ties in its favour
    hit = rank_against <= CUTOFF
    hit_f = rank_favour <= CUTOFF
    return {
        "n_test_events": len(test),
        "n_unknown_item_events": int((~known).sum()),
        "n_predictions": len(targets),
        "recall@20": float(hit.mean()),
        "mrr@20": float(np.where(hit, 1.0 / rank_against, 0.0).mean()),
        "recall@20_ties_in_favour": float(hit_f.mean()),
        "mrr@20_ties_in_favour": float(np.where(hit_f, 1.0 / rank_favour, 0.0).mean()),
    }


def parse_params(pairs: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        params[key] = json.loads(value) if value not in ("adagrad", "adam", "ce", "bpr-max", "top1-max") else value
    return params


def yoochoose_headline(per_seed: list[tuple[int, float, float, float]], epochs: int) -> str:
    """Recall@20 and MRR@20 (mean ± sd over several seeds) against the official figures, fit speed.

    ``per_seed``: ``(seed, recall@20, mrr@20, fit seconds)`` of each seed, in run order.
    """
    recalls = [r for _, r, _, _ in per_seed]
    mrrs = [m for _, _, m, _ in per_seed]
    if len(per_seed) > 1:
        figures = (f"Recall@20 {statistics.mean(recalls):.4f} ± {statistics.stdev(recalls):.4f}, MRR@20 "
                   f"{statistics.mean(mrrs):.4f} ± {statistics.stdev(mrrs):.4f} over {len(per_seed)} seeds")
    else:
        figures = f"Recall@20 {recalls[0]:.4f}, MRR@20 {mrrs[0]:.4f}, seed {per_seed[0][0]}"
    seconds_per_epoch = statistics.mean(f for _, _, _, f in per_seed) / epochs
    return f"{figures} (official 0.664 / 0.353); fit {seconds_per_epoch:.1f} s/epoch"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=OFFICIAL_RSC15_CE["epochs"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed..seed+N-1; report each and the mean")
    parser.add_argument("--param", action="append", default=[], help="override a hyperparameter: name=value")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    train_path, test_path = DATA_DIR / "train_full.tsv", DATA_DIR / "test.tsv"
    if not train_path.is_file() or not test_path.is_file():
        print(f"YOOCHOOSE-100k not found under {DATA_DIR} (train_full.tsv, test.tsv); nothing to do.")
        return 1
    torch.set_num_threads(args.threads)
    train, test = read_tsv(train_path), read_tsv(test_path)
    params = {**OFFICIAL_RSC15_CE, "epochs": args.epochs, **parse_params(args.param)}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per_seed = []
    for seed in range(args.seed, args.seed + args.seeds):
        model = GRU4RecRecommender(**params, seed=seed, device=args.device, show_progress=False)
        started = time.perf_counter()
        model.fit(train)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metrics = evaluate(model, test)
        eval_seconds = time.perf_counter() - started
        per_seed.append((seed, metrics["recall@20"], metrics["mrr@20"], fit_seconds))
        print(f"seed {seed}: Recall@20 {metrics['recall@20']:.4f} MRR@20 {metrics['mrr@20']:.4f} "
              f"fit {fit_seconds:.1f}s", flush=True)

    device = str(model.device_)
    lines = [
        f"train: {len(train):,} events, {train['session_id'].nunique():,} sessions, {model.n_items:,} items; "
        f"test: {metrics['n_test_events']:,} events, {metrics['n_predictions']:,} next-item predictions, "
        f"{metrics['n_unknown_item_events']} events with an item unknown to the model (left out).",
        "",
        f"Parameters: `{json.dumps(params, sort_keys=True)}`, seed {per_seed[-1][0]} (this table; every "
        f"seed below), device {device}, "
        f"torch threads {args.threads}.",
        "",
        "| metric | ties against the model | ties in its favour (official rule) | official GRU4Rec on full RSC15 |",
        "|---|---|---|---|",
        f"| Recall@20 | {metrics['recall@20']:.4f} | {metrics['recall@20_ties_in_favour']:.4f} | 0.664 |",
        f"| MRR@20 | {metrics['mrr@20']:.4f} | {metrics['mrr@20_ties_in_favour']:.4f} | 0.353 |",
        "",
        f"Fit {fit_seconds:.1f} s ({fit_seconds / params['epochs']:.1f} s/epoch), "
        f"evaluation {eval_seconds:.1f} s; 1-minute load average {load_before:.1f} when the fit "
        f"started (other jobs on the machine slow multi-threaded torch badly). Loss per epoch: "
        + ", ".join(f"{h['loss']:.4f}" for h in model.history_) + ".",
    ]
    if len(per_seed) > 1:
        recalls = [r for _, r, _, _ in per_seed]
        mrrs = [m for _, _, m, _ in per_seed]
        lines += [
            "",
            "| seed | Recall@20 | MRR@20 | fit s |",
            "|---|---|---|---|",
            *[f"| {s} | {r:.4f} | {m:.4f} | {f:.1f} |" for s, r, m, f in per_seed],
            f"| **mean ± sd** | **{statistics.mean(recalls):.4f} ± {statistics.stdev(recalls):.4f}** | "
            f"**{statistics.mean(mrrs):.4f} ± {statistics.stdev(mrrs):.4f}** | |",
        ]
    body = "\n".join(lines)
    headline = yoochoose_headline(per_seed, params["epochs"])
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_append:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import append_results

        command = " ".join([".venv/bin/python", "benchmarks/gru4rec_yoochoose.py", *map(shlex.quote, sys.argv[1:])])
        settings_name = "official RSC15 cross-entropy settings" + (" with overrides" if args.param else "")
        path = append_results(f"GRU4Rec on YOOCHOOSE-100k ({settings_name})", command, body, headline)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
