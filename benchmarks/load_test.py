"""Load test of `funnelrec serve` on what `funnelrec demo` saves: every model of the run, one by one.

    .venv/bin/python benchmarks/load_test.py                        # a demo-scale run (built once, cached)
    .venv/bin/python benchmarks/load_test.py --artifacts artifacts  # the latest `funnelrec demo` run
    .venv/bin/python benchmarks/load_test.py --scale tiny --requests 200 --warmup 20 --no-record  # smoke

Without ``--artifacts`` it runs ``funnelrec demo --scale SCALE --no-report`` once into
benchmarks/.cache/load_test/SCALE (its own data, artifacts and reports folders) and serves that
run. It starts ``funnelrec serve`` in a subprocess on 127.0.0.1 with a free port and an API key,
asks ``/health`` which models are loaded and which is the default, and then measures each model
in turn: a warm-up, then a bounded, paced load (``--requests`` at ``--rate`` per second from
``--clients`` threads, one keep-alive httpx client each) over

- ``GET /visitors/{id}/recommendations?explain=true`` (10% of the visitors unknown: cold start),
- ``POST /sessions/recommendations`` (a live session of 1-10 items, explanations on),
- ``GET /items/{id}/similar`` (left out for a model that cannot answer it),

and reports throughput, p50/p90/p99/max latency per model and endpoint, the error count and the
server's CPU time. The default model is asked without ``model=``, as a client that names none
gets it. Latency is measured from each request's scheduled start (so a late client does not hide
queueing). Target (2 cores, 100 req/s): zero errors and p99 < 50 ms for recommendations with
explanations, for every model. Loopback traffic only. Run it alone: another heavy job on the
same cores makes the tail noise.
"""

from __future__ import annotations

import argparse
import gc
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
SERVER_LOG = CACHE / "server.log"
HOST = "127.0.0.1"
ENDPOINTS = ("visitor_recs_explain", "session_recs_explain", "similar_items")
EXPLAINED = ("visitor_recs_explain", "session_recs_explain")
#: Share of each endpoint in the load.
MIX = {"visitor_recs_explain": 0.5, "session_recs_explain": 0.3, "similar_items": 0.2}
TARGET_P99_MS = 50.0


# --------------------------------------------------------------------------- the run served
def build_run(scale: str) -> Path:
    """``funnelrec demo --scale SCALE --no-report`` into the cache (once); returns its artifacts root."""
    root = CACHE / scale
    artifacts = root / "artifacts"
    if (root / "COMPLETE").exists():
        return artifacts
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FUNNELREC_DATA_DIR": str(root / "data"), "FUNNELREC_ARTIFACTS_DIR": str(artifacts),
           "FUNNELREC_REPORTS_DIR": str(root / "reports")}
    cmd = [sys.executable, "-m", "funnelrec.cli", "--quiet", "demo", "--scale", scale, "--no-report"]
    print(f"building a {scale} demo run in {root} (once): {' '.join(cmd[2:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"error: funnelrec demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (root / "COMPLETE").write_text(f"funnelrec demo --scale {scale}, {time.perf_counter() - started:.0f} s\n")
    return artifacts


def resolve_run(given: Path) -> Path:
    """``given`` itself when it holds models, else its newest run subfolder (what serve picks)."""
    if find_model_dirs(given):
        return given
    runs = sorted(p for p in given.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and find_model_dirs(p)) if given.is_dir() else []
    if not runs:
        sys.exit(f"error: no saved models in {given} or its subfolders")
    return runs[-1]


# --------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(run: Path, api_key: str, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "FUNNELREC_API_KEY": api_key}
    cmd = [sys.executable, "-m", "funnelrec.cli", "--quiet", "serve", "--artifacts", str(run),
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

    def split(self, n_first: int) -> tuple[Plan, Plan]:
        return (Plan(self.kinds[:n_first], self.requests[:n_first]),
                Plan(self.kinds[n_first:], self.requests[n_first:]))


@dataclass
class Catalogue:
    """Visitors, items and visitors' item lists to draw requests from (read from one saved model)."""

    visitors: np.ndarray
    items: np.ndarray
    user_items: object  # csr, rows = visitors

    @classmethod
    def of(cls, run: Path) -> Catalogue:
        dirs = find_model_dirs(run)
        model = Recommender.load(dirs.get("popular", next(iter(dirs.values()))))
        return cls(np.asarray(model.visitor_map_.ids), np.asarray(model.item_ids), model.user_items_.tocsr())


def make_plan(catalogue: Catalogue, n: int, seed: int, model: str | None, mix: dict[str, float]) -> Plan:
    """``n`` requests for ``model`` (``None``: the default model, not named)."""
    rng = np.random.default_rng(seed)
    visitors, items, ui = catalogue.visitors, catalogue.items, catalogue.user_items
    rich = np.flatnonzero(np.diff(ui.indptr) >= 2)  # visitors with 2+ items: their items form sessions
    query = "" if model is None else f"&model={model}"
    kinds = rng.choice(list(mix), size=n, p=np.array(list(mix.values())) / sum(mix.values())).tolist()
    requests: list[tuple[str, str, dict | None]] = []
    for kind in kinds:
        if kind == "visitor_recs_explain":
            visitor = int(rng.choice(visitors)) if rng.random() > 0.1 else int(visitors.max() + 1 + rng.integers(1000))
            requests.append(("GET", f"/visitors/{visitor}/recommendations?n=10&explain=true{query}", None))
        elif kind == "session_recs_explain":
            row = int(rng.choice(rich))
            own = items[ui.indices[ui.indptr[row] : ui.indptr[row + 1]]]
            session = rng.permutation(own)[: int(rng.integers(1, 11))].tolist()
            body = {"item_ids": [int(i) for i in session], "n": 10, "explain": True}
            if model is not None:
                body["model"] = model
            requests.append(("POST", "/sessions/recommendations", body))
        else:
            requests.append(("GET", f"/items/{int(rng.choice(items))}/similar?n=10{query}", None))
    return Plan(kinds, requests)


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ENDPOINTS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    error_samples: list[str] = field(default_factory=list)
    late: int = 0
    elapsed: float = 0.0
    cpu_s: float | None = None


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

    # this client imports funnelrec (numpy, pandas, scipy...): a full collection over those objects
    # paused every client thread ~100 ms, which the figures then blamed on the server
    gc.collect()
    gc.freeze()
    threads = [threading.Thread(target=worker, name=f"load-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=n / rate + 120)
    return time.perf_counter() - start


def answers_similar(url: str, api_key: str, model: str, item: int) -> bool:
    """Whether ``model`` answers ``/items/{id}/similar`` (a model without item vectors says 422)."""
    response = httpx.get(f"{url}/items/{item}/similar", params={"n": 10, "model": model},
                         headers={API_KEY_HEADER: api_key}, timeout=30.0)
    return response.status_code == 200


def explain_p99(record: Record) -> float:
    return max((float(np.percentile(record.latencies[k], 99)) for k in EXPLAINED if record.latencies[k]),
               default=float("nan"))


def passed(record: Record) -> bool:
    return sum(record.errors.values()) == 0 and explain_p99(record) < TARGET_P99_MS


# --------------------------------------------------------------------------- the report
def report(records: dict[str, Record], labels: dict[str, str], args, run: Path) -> str:
    rows = ["| model | endpoint | requests | errors | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|"]
    verdicts = ["| model | req/s | server CPU (share of one core) | late starts | worst p99 with explanations ms "
                "| errors | target |", "|---|---|---|---|---|---|---|"]
    for key, record in records.items():
        label = labels[key]
        for kind in ENDPOINTS:
            lat = np.asarray(record.latencies[kind])
            if lat.size:
                p50, p90, p99 = np.percentile(lat, [50, 90, 99])
                rows.append(f"| {label} | {kind} | {lat.size:,} | {record.errors[kind]} | {p50:.1f} | {p90:.1f} | "
                            f"{p99:.1f} | {lat.max():.1f} |")
        total = sum(len(v) for v in record.latencies.values())
        cpu = "n/a" if record.cpu_s is None else f"{record.cpu_s:.1f} s ({record.cpu_s / record.elapsed:.0%})"
        verdicts.append(f"| {label} | {total / record.elapsed:.1f} | {cpu} | {record.late} | "
                        f"{explain_p99(record):.1f} | {sum(record.errors.values())} | "
                        f"{'met' if passed(record) else '**NOT met**'} |")
    n_met = sum(passed(r) for r in records.values())
    lines = [
        f"- run served: `{run}`; models: {', '.join(labels[k] for k in records)}",
        f"- per model: {args.requests:,} requests at {args.rate:g} req/s from {args.clients} client threads "
        f"(mix {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}), after {args.warmup} warm-up requests; "
        f"the models one after another on the same server",
        "- latency is measured from each request's scheduled start, on the same machine as the server",
        "",
        *verdicts,
        "",
        *rows,
        "",
        f"Target (zero errors, p99 < {TARGET_P99_MS:g} ms for recommendations with explanations): "
        f"**met for {n_met} of {len(records)} models**.",
    ]
    samples = [(labels[k], s) for k, r in records.items() for s in r.error_samples]
    if samples:
        lines += ["", "Error samples:", *[f"- {label}: `{s}`" for label, s in samples[:10]]]
    return "\n".join(lines)


def load_headline(records: dict[str, Record], labels: dict[str, str], rate: float) -> str:
    """The worst model's p99 with explanations, the errors, and for how many models the target held."""
    worst = max(records, key=lambda k: explain_p99(records[k]))
    errors = sum(sum(r.errors.values()) for r in records.values())
    met = sum(passed(r) for r in records.values())
    return (f"{len(records)} model(s) of a demo run at {rate:g} req/s with explanations: worst p99 "
            f"{explain_p99(records[worst]):.1f} ms ({labels[worst]}), {errors} errors; target "
            f"(p99 < {TARGET_P99_MS:g} ms, 0 errors) met for {met} of {len(records)} models")


def _cpu_seconds(pid: int) -> float | None:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # psutil missing or the process gone: report without CPU
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="A run folder of `funnelrec demo`, or a folder of runs (the newest is used).")
    parser.add_argument("--scale", default="demo", help="Without --artifacts: the demo run's scale (tiny, demo).")
    parser.add_argument("--models", default=None, help="Comma-separated model keys (default: every one served).")
    parser.add_argument("--requests", type=int, default=3000, help="Requests measured per model (bounded run).")
    parser.add_argument("--rate", type=float, default=100.0, help="Target requests per second.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent client threads.")
    parser.add_argument("--warmup", type=int, default=100, help="Unmeasured requests first, per model.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    if not (0 < args.requests <= 100_000 and 0 < args.rate <= 2000 and 0 < args.clients <= 64 and args.warmup >= 0):
        parser.error("--requests must be in 1..100000, --rate in (0, 2000], --clients in 1..64, --warmup >= 0")

    run = resolve_run(args.artifacts if args.artifacts is not None else build_run(args.scale))
    catalogue = Catalogue.of(run)
    api_key = secrets.token_urlsafe(24)
    proc, url = start_server(run, api_key)
    records: dict[str, Record] = {}
    try:
        health = httpx.get(f"{url}/health", timeout=10.0).json()
        served, default = list(health["models"]), health["default_model"]
        wanted = served if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(served))
        if unknown:
            sys.exit(f"error: not served: {unknown}; served: {served}")
        order = sorted(wanted, key=lambda m: (m != default, m))  # the default model first
        labels = {m: f"{m} (default)" if m == default else m for m in order}
        print(f"server up at {url}: {', '.join(labels.values())}", flush=True)
        for i, key in enumerate(order):
            mix = dict(MIX)
            if not answers_similar(url, api_key, key, int(catalogue.items[0])):
                mix.pop("similar_items")
            plan = make_plan(catalogue, args.warmup + args.requests, args.seed + i, None if key == default else key,
                             mix)
            warm, measured = plan.split(args.warmup)
            print(f"{labels[key]}: warm-up {args.warmup}, then {args.requests} requests at {args.rate:g} req/s",
                  flush=True)
            run_load(url, api_key, warm, args.rate, args.clients, Record())
            record = records[key] = Record()
            cpu_before = _cpu_seconds(proc.pid)
            record.elapsed = run_load(url, api_key, measured, args.rate, args.clients, record)
            cpu_after = _cpu_seconds(proc.pid)
            if cpu_before is not None and cpu_after is not None:
                record.cpu_s = cpu_after - cpu_before
            print(f"  p99 with explanations {explain_p99(record):.1f} ms, errors {sum(record.errors.values())}",
                  flush=True)
    finally:
        stop_server(proc)
    body = report(records, labels, args, run)
    headline = load_headline(records, labels, args.rate)
    print(f"{body}\n\nheadline: {headline}")
    if not args.no_record:
        command = "python benchmarks/load_test.py " + " ".join(sys.argv[1:])
        append_results("Serving: load test of `funnelrec serve`", command.strip(), body, headline)
    sys.exit(0 if all(passed(r) for r in records.values()) else 1)


if __name__ == "__main__":
    main()
