"""SASRec next-item accuracy on the YOOCHOOSE-100k split (the GRU4Rec benchmark's protocol).

Same data, same full-catalogue ranking with ties against the model, as
``benchmarks/gru4rec_yoochoose.py``; SASRec sees each training session as one sequence.

    .venv/bin/python benchmarks/sasrec_yoochoose.py [--epochs 20] [--threads 2] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402
from gru4rec_yoochoose import DATA_DIR, evaluate, read_tsv  # noqa: E402

from funnelrec.models.sequential.sasrec import SASRecRecommender  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    train_path, test_path = DATA_DIR / "train_full.tsv", DATA_DIR / "test.tsv"
    if not train_path.is_file() or not test_path.is_file():
        print(f"YOOCHOOSE-100k not found under {DATA_DIR}; nothing to do.")
        return 1
    torch.set_num_threads(args.threads)
    train, test = read_tsv(train_path), read_tsv(test_path)
    params = {"hidden_dim": 64, "n_heads": 2, "n_layers": 2, "max_seq_length": 50, "dropout": 0.2,
              "learning_rate": 0.001, "batch_size": 128, "epochs": args.epochs, "loss_type": "ce"}
    model = SASRecRecommender(**params, seed=args.seed, show_progress=False)
    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate(model, test)
    body = (
        f"Train {len(train):,} events / {model.n_items:,} items; {metrics['n_predictions']:,} next-item "
        f"predictions, {metrics['n_unknown_item_events']} test events with an unknown item.\n\n"
        f"Parameters: `{json.dumps(params, sort_keys=True)}`, seed {args.seed}, torch threads {args.threads}.\n\n"
        "| model | Recall@20 | MRR@20 | fit s |\n|---|---|---|---|\n"
        f"| SASRec (ties against) | {metrics['recall@20']:.4f} | {metrics['mrr@20']:.4f} | {fit_seconds:.1f} |\n"
        "| official GRU4Rec (reference, ties in its favour) | 0.664 | 0.353 | |"
    )
    headline = (f"Recall@20 {metrics['recall@20']:.4f}, MRR@20 {metrics['mrr@20']:.4f}, seed {args.seed} "
                f"(official GRU4Rec 0.664 / 0.353); fit {fit_seconds:.1f} s")
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_append:
        append_results("SASRec on YOOCHOOSE-100k", "python benchmarks/sasrec_yoochoose.py " + " ".join(sys.argv[1:]),
                       body, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
