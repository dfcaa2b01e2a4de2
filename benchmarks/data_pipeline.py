"""Data pipeline at full RetailRocket scale: load, sessions, split, features.

Generates the ``full`` synthetic data once (cached in ``benchmarks/.cache/full``), then times
each step of the chain in this process and reports peak resident memory.
Target on 2 cores: the chain after generation under 20 s and under 4 GB peak RSS.

    .venv/bin/python benchmarks/data_pipeline.py [--scale full]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="full")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    raw = CACHE / args.scale
    if not (raw / "events.csv").exists():
        # a separate process, so generation does not count in this process's peak memory
        subprocess.run(
            [sys.executable, "-m", "funnelrec.cli", "--quiet", "generate", "--scale", args.scale,
             "--out", str(raw)], check=True,
        )

    from funnelrec.data.features.item_features import ItemFeatureExtractor
    from funnelrec.data.features.user_features import UserFeatureExtractor
    from funnelrec.data.loaders.retailrocket import RetailRocketLoader
    from funnelrec.data.processors.session_builder import SessionBuilder
    from funnelrec.data.processors.splitter import TimeBasedSplitter

    base_rss = peak_rss_gb()
    steps: list[tuple[str, float, float]] = []

    def timed(name, fn):
        started = time.perf_counter()
        out = fn()
        steps.append((name, time.perf_counter() - started, peak_rss_gb()))
        return out

    loader = RetailRocketLoader(raw)
    events = timed("load_events (with category join)", loader.load_events)
    events = timed("build_sessions", lambda: SessionBuilder().build_sessions(events))
    train, val, test = timed("split 0.8/0.1/0.1", lambda: TimeBasedSplitter().split(events))
    timed("UserFeatureExtractor.fit(train)", lambda: UserFeatureExtractor().fit(train))
    timed("ItemFeatureExtractor.fit(train)", lambda: ItemFeatureExtractor().fit(train))
    total = sum(s for _, s, _ in steps)
    peak = peak_rss_gb()

    met = "met" if total < 20 and peak < 4 else "NOT met"
    rows = "\n".join(f"| {name} | {sec:.2f} | {rss:.2f} |" for name, sec, rss in steps)
    body = (
        f"Scale `{args.scale}`: {len(events):,} events, {events['visitor_id'].nunique():,} visitors, "
        f"{events['item_id'].nunique():,} items, {events['session_id'].nunique():,} sessions.\n\n"
        f"| step | seconds | peak RSS so far (GB) |\n|---|---:|---:|\n{rows}\n"
        f"| **whole chain** | **{total:.2f}** | **{peak:.2f}** |\n\n"
        f"Peak RSS after imports, before loading: {base_rss:.2f} GB. "
        f"Target: < 20 s and < 4 GB -> {met}."
    )
    headline = (f"whole chain {total:.2f} s, peak RSS {peak:.2f} GB on {len(events):,} events "
                f"(target < 20 s and < 4 GB: {met})")
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        append_results(f"Data pipeline ({args.scale})", "python benchmarks/data_pipeline.py --scale "
                       f"{args.scale}", body, headline)


if __name__ == "__main__":
    main()
