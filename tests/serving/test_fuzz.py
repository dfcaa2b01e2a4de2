"""Fuzzing the HTTP API from its own OpenAPI schema: schemathesis, every check, every phase.

A real uvicorn server on loopback serves small saved artifacts (the hybrid as default model,
ALS, Popular, SessionKNN, the explainer) with an API key. ``benchmarks/api_fuzz.py`` runs
``schemathesis run`` on its ``/openapi.json`` (schema examples, boundary and negative cases,
generated requests, stateful sequences) and runs every built-in check on each answer: no 5xx;
status codes, content types, headers and bodies as documented; valid data accepted; invalid
data refused; the declared key enforced. Once with the key, once without (then every
operation but the public pages must answer 401). Small and seeded here; the benchmark script
runs the larger campaign on a ``funnelrec demo`` run.

(The CLI rather than schemathesis' pytest plugin: its lazy ``from_fixture`` schemas read a
node attribute that pytest 9 removed.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from funnelrec.serving.app import create_app

pytestmark = pytest.mark.slow

API_KEY = "fuzz-key-0123"
MAX_EXAMPLES = 40
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def api_fuzz():
    """``benchmarks/api_fuzz.py`` as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("api_fuzz", BENCHMARKS / "api_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("api_fuzz", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fuzzed_url(served_artifacts, serve):
    with serve(create_app(served_artifacts, api_key=API_KEY)) as url:
        yield url


def _explain(campaign) -> str:
    return (f"{campaign.label}: exit {campaign.exit_code}, failures {campaign.failures}, "
            f"errors {campaign.errors}, statuses {dict(campaign.statuses)}, "
            f"not refused {campaign.not_refused[:5]}\n{campaign.log[-4000:]}")


def test_fuzz_with_the_key(api_fuzz, fuzzed_url, tmp_path):
    campaign = api_fuzz.run_schemathesis(fuzzed_url, API_KEY, max_examples=MAX_EXAMPLES, seed=0,
                                         workdir=tmp_path)
    assert campaign.clean, _explain(campaign)
    assert campaign.server_errors == 0 and campaign.check_failures == 0
    # the fuzzer got through to the models, and was refused where it should be
    assert campaign.statuses[200] > 100 and campaign.statuses[422] > 10, _explain(campaign)


def test_fuzz_without_the_key(api_fuzz, fuzzed_url, tmp_path):
    campaign = api_fuzz.run_schemathesis(fuzzed_url, None, max_examples=MAX_EXAMPLES, seed=0,
                                         workdir=tmp_path)
    assert campaign.clean, _explain(campaign)
    assert campaign.statuses[401] > 50 and campaign.not_refused == []
    assert set(campaign.statuses) <= {200, 401, 405}, _explain(campaign)
