"""Demo fit times per model with the default thread count and with one thread, quiet and busy.

    .venv/bin/python benchmarks/threads.py                                    # every demo model, demo data
    .venv/bin/python benchmarks/threads.py --models sasrec,two_tower --burners 2
    .venv/bin/python benchmarks/threads.py --scale tiny --models popular,als --no-record  # smoke

Each fit runs in a fresh process (``FUNNELREC_THREADS`` set or not, applied first as the CLI
does), on the demo data of ``--scale`` (generated once into benchmarks/.cache/threads/SCALE), with
the demo's hyperparameters (``funnelrec.pipeline.DEMO_MODELS``). The hybrid's components are
fitted first and not timed, as in the demo, where they are fitted already. Four conditions:

- quiet, default threads (``funnelrec.threads.resolve_threads()``: the cores this process may use);
- quiet, 1 thread;
- busy, default threads: ``--burners`` other processes spin on the CPU meanwhile;
- busy, 1 thread.

Records the table to benchmarks/RESULTS.md. The quiet figures need a quiet machine: run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "threads"
BURNER = "while True: pass"


# --------------------------------------------------------------------------- one fit (child process)
def fit_once(model_key: str, raw_dir: Path) -> dict:
    """Fit one demo model on the data in ``raw_dir``; the seconds of its own fit."""
    import funnelrec
    from funnelrec.threads import configure_threads

    funnelrec.enable_logging("WARNING")
    threads = configure_threads()  # before torch is imported, as the CLI does
    import torch

    from funnelrec.pipeline import (
        DEMO_MODELS,
        HYBRID_COMPONENTS,
        build_model,
        fit_model,
        prepare_data,
    )

    data = prepare_data(raw_dir)
    fitted = {}
    if model_key == "funnel_hybrid":  # the demo fits the components first; only the hybrid's own fit is timed
        for component in HYBRID_COMPONENTS.values():
            fitted[component] = fit_model(build_model(component, **DEMO_MODELS.get(component, {})), data)
    model = build_model(model_key, fitted, **DEMO_MODELS.get(model_key, {}))
    if hasattr(model, "show_progress"):
        model.show_progress = False
    started = time.perf_counter()
    fit_model(model, data)
    return {"model": model_key, "seconds": time.perf_counter() - started, "threads": threads,
            "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- the parent
@contextmanager
def burning(n: int):
    """``n`` processes spinning on the CPU while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def timed_fit(model_key: str, raw_dir: Path, threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FUNNELREC_THREADS", "FUNNELREC_FAISS_THREADS")}
    env["FUNNELREC_PROGRESS_BARS"] = "false"
    if threads is not None:
        env["FUNNELREC_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--fit-once", model_key, "--raw-dir", str(raw_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: fitting {model_key} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="demo", help="Synthetic data scale (tiny, demo, full).")
    parser.add_argument("--models", default=None, help="Comma-separated model keys (default: every demo model).")
    parser.add_argument("--burners", type=int, default=1, help="CPU-burning processes in the busy runs.")
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    parser.add_argument("--fit-once", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_once is not None:
        print(json.dumps(fit_once(args.fit_once, args.raw_dir)))
        return
    if args.burners < 0:
        parser.error("--burners must be >= 0")

    from funnelrec.pipeline import DEMO_MODELS, ensure_data
    from funnelrec.threads import available_cores, resolve_threads

    keys = list(DEMO_MODELS) if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(keys) - set(DEMO_MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; demo models: {list(DEMO_MODELS)}")
    raw_dir = ensure_data(CACHE / args.scale / "raw", scale=args.scale)
    default = resolve_threads()
    conditions = [("quiet", None, 0), ("quiet", 1, 0), ("busy", None, args.burners), ("busy", 1, args.burners)]
    seconds: dict[str, list[float]] = {k: [] for k in keys}
    started = time.perf_counter()
    for place, threads, burners in conditions:
        with burning(burners):
            for key in keys:
                result = timed_fit(key, raw_dir, threads)
                seconds[key].append(result["seconds"])
                print(f"{place:5s} threads={result['torch_threads']}: {key} {result['seconds']:.1f} s", flush=True)
    header = (f"| model | quiet, {default} threads (default) s | quiet, 1 thread s | busy, {default} threads s "
              f"| busy, 1 thread s |")
    rows = [header, "|---|---|---|---|---|"]
    rows += [f"| {key} | " + " | ".join(f"{s:.1f}" for s in seconds[key]) + " |" for key in keys]
    totals = [sum(seconds[k][i] for k in keys) for i in range(len(conditions))]
    rows.append("| all | " + " | ".join(f"{s:.1f}" for s in totals) + " |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = "\n".join([
        f"Demo fit times ({args.scale} data, demo hyperparameters, each fit in a fresh process; the hybrid "
        f"without its components' fits). Default threads: {default} (the cores this process may use: "
        f"{available_cores()}). Busy: {args.burners} process(es) spinning on the CPU meanwhile. "
        f"1-minute load average at the end: {load:.1f}; {time.perf_counter() - started:.0f} s in all.",
        "",
        *rows,
    ])
    headline = (f"{args.scale} fits of {len(keys)} model(s) in all: quiet {totals[0]:.0f} s with {default} threads "
                f"vs {totals[1]:.0f} s with 1; with {args.burners} competing process(es) {totals[2]:.0f} s vs "
                f"{totals[3]:.0f} s")
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        command = "python benchmarks/threads.py " + " ".join(sys.argv[1:])
        append_results("Threads: demo fit times, default vs 1 thread, quiet vs busy", command.strip(), body,
                       headline)


if __name__ == "__main__":
    main()
