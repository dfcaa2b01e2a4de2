"""Load test of `funnelrec serve`: paced requests from several clients, latency per endpoint.

    .venv/bin/python benchmarks/load_test.py                        # demo-scale artifacts (cached)
    .venv/bin/python benchmarks/load_test.py --artifacts artifacts  # the latest `funnelrec demo` run

Builds (once, cached in benchmarks/.cache/load_test) Popular, ALS, SessionKNN and an explainer on
the synthetic demo data, or reuses saved artifacts; starts `funnelrec serve` in a subprocess on
127.0.0.1 with a free port and an API key; waits for /health; then sends a bounded, paced load
(--requests at --rate per second from --clients threads, one keep-alive httpx client each) over

- ``GET /visitors/{id}/recommendations?explain=true`` (10% of the visitors unknown: cold start),
- ``POST /sessions/recommendations`` (a live session of 1-10 items, explanations on),
- ``GET /items/{id}/similar``,

and reports throughput, p50/p90/p99/max latency per endpoint and the error count. Latency is
measured from the request's scheduled start (so a late client does not hide queueing).
Target (2 cores, 100 req/s): zero errors and p99 < 50 ms for recommendations with explanations.
Loopback traffic only. Run it alone: another heavy job on the same cores makes the tail noise.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

from funnelrec.models.base import Recommender  # noqa: E402
from funnelrec.serving.app import API_KEY_HEADER, find_model_dirs  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "load_test"
SERVER_LOG = CACHE.parent / "load_test_server.log"
HOST = "127.0.0.1"
ENDPOINTS = ("visitor_recs_explain", "session_recs_explain", "similar_items")
#: Share of each endpoint in the load.
MIX = {"visitor_recs_explain": 0.5, "session_recs_explain": 0.3, "similar_items": 0.2}
TARGET_P99_MS = 50.0


# --------------------------------------------------------------------------- artifacts
def build_artifacts(out: Path) -> Path:
    """Demo-scale Popular, ALS, SessionKNN and explainer, saved in the serving layout."""
    from funnelrec.data.processors.session_builder import SessionBuilder
    from funnelrec.data.processors.splitter import TimeBasedSplitter
    from funnelrec.data.synthetic import generate
    from funnelrec.models.explainable.explainer import RecommendationExplainer
    from funnelrec.pipeline import DEMO_MODELS, build_model

    started = time.perf_counter()
    events = SessionBuilder().build_sessions(generate("demo").canonical_events(with_sessions=False))
    train, _, _ = TimeBasedSplitter(0.8, 0.1, 0.1).split(events)
    print(f"demo data: {len(train):,} training events ({time.perf_counter() - started:.0f} s)", flush=True)
    for key in ("popular", "als", "session_knn"):
        build_model(key, **DEMO_MODELS.get(key, {})).fit(train).save(out / key)
        print(f"  saved {key} ({time.perf_counter() - started:.0f} s)", flush=True)
    RecommendationExplainer(item_popularity=train["item_id"].value_counts().to_dict()).fit(train).save(
        out / "explainer"
    )
    print(f"  saved explainer ({time.perf_counter() - started:.0f} s)", flush=True)
    (out / "COMPLETE").write_text("built by benchmarks/load_test.py\n")
    return out


def resolve_artifacts(given: Path | None) -> Path:
    """``given`` itself when it holds models, else its latest run subfolder; else the cache."""
    if given is None:
        if not (CACHE / "COMPLETE").exists():
            print(f"building demo artifacts in {CACHE} (once)", flush=True)
            CACHE.mkdir(parents=True, exist_ok=True)
            build_artifacts(CACHE)
        return CACHE
    if find_model_dirs(given):
        return given
    runs = sorted(p for p in given.iterdir() if p.is_dir() and find_model_dirs(p)) if given.is_dir() else []
    if not runs:
        sys.exit(f"error: no saved models in {given} or its subfolders")
    return runs[-1]


# --------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(artifacts: Path, api_key: str, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "FUNNELREC_API_KEY": api_key}
    cmd = [sys.executable, "-m", "funnelrec.cli", "--quiet", "serve", "--artifacts", str(artifacts),
           "--host", HOST, "--port", str(port)]
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with SERVER_LOG.open("w") as log:  # a file, not a pipe: the access log must never block
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with {proc.returncode}:\n{SERVER_LOG.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    sys.exit(f"error: the server did not answer /health within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --------------------------------------------------------------------------- the load
@dataclass
class Plan:
    """Every request decided up front (seeded), so a run is reproducible."""

    kinds: list[str]
    requests: list[tuple[str, str, dict | None]]  # (method, path, json body)


def make_plan(artifacts: Path, n: int, seed: int, session_model: str | None) -> Plan:
    dirs = find_model_dirs(artifacts)
    model = Recommender.load(dirs.get("popular", next(iter(dirs.values()))))
    rng = np.random.default_rng(seed)
    visitors = np.asarray(model.visitor_map_.ids)
    items = np.asarray(model.item_ids)
    ui = model.user_items_.tocsr()
    rich = np.flatnonzero(np.diff(ui.indptr) >= 2)  # visitors with 2+ items: their items form sessions
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values())).tolist()
    requests = []
    for kind in kinds:
        if kind == "visitor_recs_explain":
            visitor = int(rng.choice(visitors)) if rng.random() > 0.1 else int(visitors.max() + 1 + rng.integers(1000))
            requests.append(("GET", f"/visitors/{visitor}/recommendations?n=10&explain=true", None))
        elif kind == "session_recs_explain":
            row = int(rng.choice(rich))
            own = items[ui.indices[ui.indptr[row] : ui.indptr[row + 1]]]
            session = rng.permutation(own)[: int(rng.integers(1, 11))].tolist()
            body = {"item_ids": [int(i) for i in session], "n": 10, "explain": True}
            if session_model:
                body["model"] = session_model
            requests.append(("POST", "/sessions/recommendations", body))
        else:
            requests.append(("GET", f"/items/{int(rng.choice(items))}/similar?n=10", None))
    return Plan(kinds, requests)


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ENDPOINTS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    error_samples: list[str] = field(default_factory=list)
    late: int = 0


def run_load(url: str, api_key: str, plan: Plan, rate: float, clients: int, record: Record) -> float:
    """Send ``plan`` paced at ``rate`` req/s from ``clients`` threads; returns the elapsed seconds."""
    n = len(plan.requests)
    lock = threading.Lock()
    next_index = [0]
    start = time.perf_counter() + 0.2

    def worker() -> None:
        with httpx.Client(base_url=url, headers={API_KEY_HEADER: api_key}, timeout=10.0) as client:
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= n:
                    return
                scheduled = start + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.005:
                    with lock:
                        record.late += 1
                method, path, body = plan.requests[i]
                kind = plan.kinds[i]
                try:
                    response = client.request(method, path, json=body)
                    ok = response.status_code == 200
                    problem = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__}: {exc}"
                elapsed_ms = (time.perf_counter() - scheduled) * 1000.0
                with lock:
                    record.latencies[kind].append(elapsed_ms)
                    if not ok:
                        record.errors[kind] += 1
                        if len(record.error_samples) < 5:
                            record.error_samples.append(f"{method} {path}: {problem}")

    threads = [threading.Thread(target=worker, name=f"load-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=n / rate + 120)
    return time.perf_counter() - start


def report(record: Record, elapsed: float, args, artifacts: Path, cpu_s: float | None) -> tuple[str, bool]:
    rows = ["| endpoint | requests | errors | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    total = sum(len(v) for v in record.latencies.values())
    for kind in ENDPOINTS:
        lat = np.asarray(record.latencies[kind])
        if lat.size == 0:
            continue
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        rows.append(f"| {kind} | {lat.size:,} | {record.errors[kind]} | {p50:.1f} | {p90:.1f} | "
                    f"{p99:.1f} | {lat.max():.1f} |")
    all_lat = np.concatenate([np.asarray(v) for v in record.latencies.values() if v])
    p50, p99 = np.percentile(all_lat, [50, 99])
    rows.append(f"| all | {total:,} | {sum(record.errors.values())} | {p50:.1f} | "
                f"{np.percentile(all_lat, 90):.1f} | {p99:.1f} | {all_lat.max():.1f} |")
    explain_p99 = max(
        float(np.percentile(record.latencies[k], 99)) for k in ("visitor_recs_explain", "session_recs_explain")
        if record.latencies[k]
    )
    errors = sum(record.errors.values())
    passed = errors == 0 and explain_p99 < TARGET_P99_MS
    lines = [
        f"- artifacts: `{artifacts}`; models served: {', '.join(find_model_dirs(artifacts))}",
        f"- load: {total:,} requests, target {args.rate:g} req/s from {args.clients} client threads "
        f"(mix {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}), after {args.warmup} warm-up requests",
        f"- throughput: {total / elapsed:.1f} req/s over {elapsed:.1f} s; late starts (>5 ms behind "
        f"schedule): {record.late}",
    ]
    if cpu_s is not None:
        lines.append(f"- server CPU: {cpu_s:.1f} s over the run ({cpu_s / elapsed:.0%} of one core)")
    lines += [
        "- latency is measured from each request's scheduled start, on the same machine as the server",
        "",
        *rows,
        "",
        f"Target (zero errors, p99 < {TARGET_P99_MS:g} ms for recommendations with explanations): "
        f"**{'met' if passed else 'NOT met'}** (errors {errors}, worst p99 {explain_p99:.1f} ms).",
    ]
    if record.error_samples:
        lines += ["", "Error samples:", *[f"- `{s}`" for s in record.error_samples]]
    return "\n".join(lines), passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="A folder of saved models, or a folder of runs (the latest is used).")
    parser.add_argument("--requests", type=int, default=3000, help="Requests measured (bounded run).")
    parser.add_argument("--rate", type=float, default=100.0, help="Target requests per second.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent client threads.")
    parser.add_argument("--warmup", type=int, default=100, help="Unmeasured requests first.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    if not (0 < args.requests <= 100_000 and 0 < args.rate <= 2000 and 0 < args.clients <= 64):
        parser.error("--requests must be in 1..100000, --rate in (0, 2000], --clients in 1..64")

    artifacts = resolve_artifacts(args.artifacts)
    dirs = find_model_dirs(artifacts)
    session_model = "session_knn" if "session_knn" in dirs else None
    plan = make_plan(artifacts, args.warmup + args.requests, args.seed, session_model)
    warm = Plan(plan.kinds[: args.warmup], plan.requests[: args.warmup])
    measured = Plan(plan.kinds[args.warmup :], plan.requests[args.warmup :])
    api_key = secrets.token_urlsafe(24)
    proc, url = start_server(artifacts, api_key)
    try:
        print(f"server up at {url}; warm-up {args.warmup}, then {args.requests} requests at "
              f"{args.rate:g} req/s", flush=True)
        run_load(url, api_key, warm, args.rate, args.clients, Record())
        cpu_before = _cpu_seconds(proc.pid)
        record = Record()
        elapsed = run_load(url, api_key, measured, args.rate, args.clients, record)
        cpu_after = _cpu_seconds(proc.pid)
    finally:
        stop_server(proc)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    body, passed = report(record, elapsed, args, artifacts, cpu)
    print(body)
    if not args.no_record:
        command = "python benchmarks/load_test.py " + " ".join(sys.argv[1:])
        append_results("Serving: load test of `funnelrec serve`", command.strip(), body)
    sys.exit(0 if passed else 1)


def _cpu_seconds(pid: int) -> float | None:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # psutil missing or the process gone: report without CPU
        return None


if __name__ == "__main__":
    main()
