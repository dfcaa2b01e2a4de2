"""API fuzzing campaign: schemathesis against `funnelrec serve`, with and without the API key.

    .venv/bin/python benchmarks/api_fuzz.py artifacts/<run>                  # the campaign
    .venv/bin/python benchmarks/api_fuzz.py artifacts/<run> --max-examples 3 --no-record  # smoke

Starts `funnelrec serve` on the run folder written by `funnelrec demo` (a subprocess, loopback,
a free port, a random API key), waits for /health, then runs `schemathesis run` twice against
its /openapi.json with every check and every phase (schema examples, coverage: boundary and
negative cases, fuzzing, stateful: the links between operations):

- with the key: no 5xx and no check failure (status codes, content types, headers and bodies
  as documented, valid data accepted, invalid data refused, the declared key enforced);
- without the key: the same, and every operation but the public pages answers 401.

Counts the requests sent (from schemathesis' HAR report), the 5xx answers, the check failures
(its JSON report) and appends them to benchmarks/RESULTS.md. Exit 1 when anything was found.
Loopback traffic only; bounded by --max-examples per operation. `tests/serving/test_fuzz.py`
runs the same campaign, small, on tiny artifacts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_results  # noqa: E402

from funnelrec.serving.app import API_KEY_HEADER, DOCS_ASSETS_URL, PUBLIC_PATHS  # noqa: E402

TITLE = "API fuzzing: schemathesis against `funnelrec serve`"


@dataclass
class Campaign:
    """What one `schemathesis run` sent and found."""

    label: str
    exit_code: int
    test_cases: int
    requests: int
    statuses: Counter[int]
    #: Check failures, grouped as schemathesis reports them (title, count, operations).
    failures: list[dict]
    #: Errors of the run itself (schema not loadable, network errors).
    errors: list[dict]
    #: Keyless run only: ``"METHOD path -> status"`` for protected paths that did not answer 401.
    not_refused: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def check_failures(self) -> int:
        return sum(int(group["count"]) for group in self.failures)

    @property
    def clean(self) -> bool:
        return (self.exit_code == 0 and not self.failures and not self.errors
                and self.server_errors == 0 and not self.not_refused and self.requests > 0)


def is_public(path: str) -> bool:
    """Whether the service answers ``path`` without the key (the index, health, docs)."""
    return path in PUBLIC_PATHS or path.startswith(DOCS_ASSETS_URL + "/")


def run_schemathesis(
    url: str, api_key: str | None, *, max_examples: int, seed: int, workdir: Path,
    timeout_s: float = 3600.0,
) -> Campaign:
    """``schemathesis run`` on ``url``'s OpenAPI schema, every check and phase; its figures.

    ``api_key``: sent in every request, or ``None`` for the keyless run. Reports go to
    ``workdir``.
    """
    label = "with the key" if api_key is not None else "without the key"
    workdir.mkdir(parents=True, exist_ok=True)
    har, report = workdir / "requests.har", workdir / "report.json"
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed),
        "--workers", "1", "--request-timeout", "30", "--no-color",
        "--report", "har,json", "--report-har-path", str(har), "--report-json-path", str(report),
    ]
    if api_key is not None:
        cmd += ["--header", f"{API_KEY_HEADER}: {api_key}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    log = done.stdout + done.stderr
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{log[-3000:]}")
    summary = json.loads(report.read_text())
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = Counter(int(entry["response"]["status"]) for entry in entries)
    not_refused = []
    if api_key is None:
        for entry in entries:
            path, status = urlsplit(entry["request"]["url"]).path, int(entry["response"]["status"])
            if not is_public(path) and status != 401:
                not_refused.append(f"{entry['request']['method']} {path} -> {status}")
    return Campaign(
        label=label,
        exit_code=done.returncode,
        test_cases=int(summary["test_cases"]["generated"]),
        requests=len(entries),
        statuses=statuses,
        failures=list(summary["failures"]),
        errors=list(summary["errors"]),
        not_refused=not_refused,
        log=log,
    )


def report(campaigns: list[Campaign], artifacts: Path, models: list[str], args) -> str:
    from schemathesis import __version__ as schemathesis_version

    rows = [
        "| run | requests | test cases | 2xx | 4xx | 5xx | check failures | protected but not 401 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in campaigns:
        ok = sum(n for s, n in c.statuses.items() if 200 <= s < 300)
        client = sum(n for s, n in c.statuses.items() if 400 <= s < 500)
        refused = str(len(c.not_refused)) if c.label == "without the key" else "n/a"
        rows.append(f"| {c.label} | {c.requests:,} | {c.test_cases:,} | {ok:,} | {client:,} | "
                    f"{c.server_errors} | {c.check_failures} | {refused} |")
    lines = [
        f"- artifacts: `{artifacts}`; models served: {', '.join(models)}",
        f"- schemathesis {schemathesis_version}: every check, phases examples, coverage, fuzzing "
        f"and stateful; at most {args.max_examples} examples per operation, seed {args.seed}, 1 worker",
        "- requests: HTTP requests recorded in schemathesis' HAR report",
        "",
        *rows,
    ]
    found = [(c.label, group) for c in campaigns for group in c.failures]
    if found:
        lines += ["", "Check failures:"]
        lines += [f"- {label}: {g['title']} ({g['count']}) on {', '.join(g['operations'])}"
                  for label, g in found]
    errors = [(c.label, e) for c in campaigns for e in c.errors]
    if errors:
        lines += ["", "Errors of the run:", *[f"- {label}: {e['title']} ({e['count']})" for label, e in errors]]
    samples = [s for c in campaigns for s in c.not_refused[:5]]
    if samples:
        lines += ["", "Protected requests answered without 401:", *[f"- `{s}`" for s in samples]]
    verdict = "none found" if all(c.clean for c in campaigns) else "**defects found**"
    lines += ["", f"5xx answers and check failures: {verdict}."]
    return "\n".join(lines)


def headline(campaigns: list[Campaign], max_examples: int) -> str:
    """What the campaign found, in one line: 5xx, check failures, keyless answers other than 401."""
    verdict = "none found" if all(c.clean for c in campaigns) else "defects found"
    not_refused = sum(len(c.not_refused) for c in campaigns)
    return (f"{verdict}: {sum(c.server_errors for c in campaigns)} 5xx, "
            f"{sum(c.check_failures for c in campaigns)} check failures, {not_refused} protected requests "
            f"answered without 401, in {sum(c.requests for c in campaigns):,} requests "
            f"({' and '.join(c.label for c in campaigns)}; at most {max_examples} examples per operation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path,
                        help="A run folder of `funnelrec demo` (or a folder of runs: the newest).")
    parser.add_argument("--max-examples", type=int, default=500, help="Examples per operation and phase.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()
    if not 1 <= args.max_examples <= 10_000:
        parser.error("--max-examples must be in 1..10000")

    from load_test import resolve_run, start_server, stop_server

    from funnelrec.serving.app import find_model_dirs

    artifacts = resolve_run(args.artifacts)
    models = sorted(find_model_dirs(artifacts))
    workdir = Path(__file__).resolve().parent / ".cache" / "api_fuzz"
    api_key = secrets.token_urlsafe(24)
    proc, url = start_server(artifacts, api_key)
    campaigns = []
    try:
        for key in (api_key, None):
            label = "with the key" if key else "without the key"
            print(f"server up at {url}; schemathesis {label}, {args.max_examples} examples per "
                  "operation", flush=True)
            campaign = run_schemathesis(url, key, max_examples=args.max_examples, seed=args.seed,
                                        workdir=workdir / label.replace(" ", "_"))
            print(campaign.log[-2500:], flush=True)
            campaigns.append(campaign)
    finally:
        stop_server(proc)
    body = report(campaigns, artifacts, models, args)
    figures = headline(campaigns, args.max_examples)
    print(f"{body}\n\nheadline: {figures}")
    if not args.no_record:
        command = "python benchmarks/api_fuzz.py " + " ".join(sys.argv[1:])
        append_results(TITLE, command.strip(), body, figures)
    sys.exit(0 if all(c.clean for c in campaigns) else 1)


if __name__ == "__main__":
    main()
