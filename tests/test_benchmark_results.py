"""``benchmarks/_results.py``: the latest-figures table on top of RESULTS.md, the history below."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

OLD_FILE = (
    "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n"
    "\n## Data pipeline (full)\n\n- date: 2026-01-01 00:00 UTC\n- machine: m\n"
    "- command: `python benchmarks/data_pipeline.py`\n\n| step | s |\n|---|---|\n| load | 0.65 |\n"
    "\n## Notes on it (by hand)\n\nQuoted, not a table:\n\n<!-- latest:begin -->\n| x | y |\n"
)


@pytest.fixture(scope="module")
def results():
    """``benchmarks/_results.py`` as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("_results", BENCHMARKS / "_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_results", module)
    spec.loader.exec_module(module)
    return module


def table_rows(results, text: str) -> list[str]:
    return results.split_results(text)[1]


def history(text: str) -> str:
    return text.split("<!-- latest:end -->\n", 1)[1]


def test_second_run_of_a_title_replaces_its_row_and_keeps_both_sections(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    results.append_results("Speed", "python speed.py", "first body", headline="p99 9.0 ms", path=path)
    results.append_results("Speed", "python speed.py --fast", "second body", headline="p99 4.5 ms", path=path)
    text = path.read_text()
    rows = table_rows(results, text)
    assert len(rows) == 1
    assert "p99 4.5 ms" in rows[0] and "`python speed.py --fast`" in rows[0] and "9.0" not in rows[0]
    assert re.search(r"\| \d{4}-\d\d-\d\d \d\d:\d\d UTC \|", rows[0])
    assert text.count("## Speed\n") == 2
    assert text.index("first body") < text.index("second body")  # newest last
    assert text.index("<!-- latest:end -->") < text.index("## Speed")  # the table leads


def test_a_new_title_gets_a_row_after_the_existing_ones(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    for title, headline in [("B", "b1"), ("A", "a1"), ("B", "b2"), ("C", "c1")]:
        results.append_results(title, "cmd", "body", headline=headline, path=path)
    rows = table_rows(results, path.read_text())
    assert [results.row_title(row) for row in rows] == ["B", "A", "C"]
    assert "b2" in rows[0]
    assert [row.split(" | ")[1] for row in rows] == ["b2", "a1", "c1"]


def test_the_history_is_kept_byte_for_byte(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    results.append_results("A", "cmd", "body a", headline="a", path=path)
    # a hand-written section with odd bytes, and CRLF line ends, added to the history
    path.write_bytes(path.read_bytes() + "\n## Notes (by hand)\r\n\r\nwith | pipes, `ticks`, \f and \u2028.\n".encode())
    before = history(path.read_bytes().decode())
    results.append_results("B", "cmd", "body b", headline="b", path=path)
    after = history(path.read_bytes().decode())
    assert after.startswith(before)
    assert after[len(before):].startswith("\n## B\n\n- date: ")
    assert after.endswith("\nbody b\n")


def test_a_file_without_markers_gets_the_table_after_its_intro(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(OLD_FILE)
    results.append_results("Data pipeline (full)", "python benchmarks/data_pipeline.py --scale full", "new body",
                           headline="whole chain 7.49 s", path=path)
    text = path.read_text()
    intro, rows, rest = results.split_results(text)
    assert intro == "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n\n"
    assert [results.row_title(row) for row in rows] == ["Data pipeline (full)"]
    old_history = OLD_FILE[OLD_FILE.index("## Data pipeline"):]
    assert rest.startswith("\n" + old_history)  # untouched, then the new section
    assert rest.endswith("new body\n")
    # the marker quoted inside a history section is not mistaken for the table
    assert text.count("<!-- latest:begin -->") == 2
    assert text.index("<!-- latest:begin -->") < text.index("## Data pipeline")


def test_a_new_file_starts_with_the_intro_and_the_table(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    results.append_results("A", "cmd", "body", headline="fig", path=path)
    text = path.read_text()
    assert text.startswith(results.INTRO + "\n<!-- latest:begin -->\n\n| benchmark | latest figure | date | command |\n")
    assert text.endswith("- command: `cmd`\n\nbody\n")


def test_pipes_backticks_and_newlines_in_cells_are_escaped(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    title = "Load test of `funnelrec serve` | every model"
    command = "python x.py --grep 'a|b' `pwd`"
    results.append_results(title, command, "body", headline="p99 5 ms | 0 errors\nsecond line", path=path)
    results.append_results("Other", "cmd", "body", headline="x", path=path)
    results.append_results(title, command, "body", headline="p99 4 ms | 0 errors", path=path)
    rows = table_rows(results, path.read_text())
    assert [results.row_title(row) for row in rows] == [title, "Other"]
    assert rows[0] == (
        r"| Load test of `funnelrec serve` \| every model | p99 4 ms \| 0 errors | "
        + re.search(r"\d{4}-\S+ \S+ UTC", rows[0]).group()
        + r" | `` python x.py --grep 'a\|b' `pwd` `` |" + "\n"
    )
    # every row has exactly the 4 cells of the header once escaped pipes are set aside
    assert all(len(results._CELL_SEPARATOR.split(row.strip())) == 6 for row in rows)
    assert path.read_text().count(f"## {title}\n") == 2


def test_hand_edited_rows_are_kept_and_a_duplicate_row_goes(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Results\n\n<!-- latest:begin -->\n| benchmark | latest figure | date | command |\n|:--|--:|---|---|\n"
        "| A | by hand, *kept* as written | 2020 | `a` |\n| B | old | 2020 | `b` |\n| B | older | 2019 | `b` |\n"
        "<!-- latest:end -->\n\n## A\n\nbody\n"
    )
    results.append_results("B", "b --new", "body", headline="new", path=path)
    rows = table_rows(results, path.read_text())
    assert rows[0] == "| A | by hand, *kept* as written | 2020 | `a` |\n"
    assert [results.row_title(row) for row in rows] == ["A", "B"] and "| new |" in rows[1]


def test_a_run_without_a_headline_points_to_its_section(results, tmp_path):
    path = tmp_path / "RESULTS.md"
    results.append_results("A", "cmd", "body", headline="old figure", path=path)
    results.append_results("A", "cmd --again", "body", path=path)
    (row,) = table_rows(results, path.read_text())
    assert results.NO_HEADLINE in row and "old figure" not in row and "`cmd --again`" in row


def test_a_crash_while_writing_leaves_the_old_file(results, tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    results.append_results("A", "cmd", "body a", headline="a", path=path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        results.append_results("B", "cmd", "body b", headline="b", path=path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["RESULTS.md"]  # no temporary file left behind


def test_the_checked_in_results_file_round_trips_and_has_one_row_per_benchmark(results):
    text = (BENCHMARKS / "RESULTS.md").read_bytes().decode()
    intro, rows, rest = results.split_results(text)
    assert results.render_results(intro, rows, rest) == text
    sections = {line[3:] for line in rest.splitlines() if line.startswith("## ")}
    titles = [results.row_title(row) for row in rows]
    assert len(titles) == len(set(titles))
    assert set(titles) == {t for t in sections if not t.startswith("Notes")}


# --------------------------------------------------------------------------- the scripts' headlines
@pytest.fixture(scope="module")
def script(results):
    """``script(name)``: ``benchmarks/<name>.py`` as a module (it puts benchmarks/ on sys.path)."""

    def load(name: str):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load


def test_faiss_headline_takes_the_fastest_index_that_reaches_the_recall_target(script):
    table = pd.DataFrame({"index": ["exact (IndexFlatIP)", "HNSW a", "HNSW b", "IVF c"],
                          "recall@20": [1.0, 0.96, 0.90, 0.951], "p99 ms": [0.1, 0.42, 0.2, 0.30]})
    faiss_headline = script("two_tower_retrieval").faiss_headline
    assert faiss_headline(table) == "FAISS IVF c: recall@20 0.951, p99 0.30 ms (fastest with recall@20 >= 0.95)"
    assert faiss_headline(table, 0.99).startswith("FAISS HNSW a: recall@20 0.960, p99 0.42 ms (best recall; none")


def test_demo_comparison_headline_names_the_two_best_of_each_protocol(script):
    visitors = pd.DataFrame({"model": ["ALS", "Hybrid", "Popular", "SASRec"], "ndcg@10": [0.0835, 0.0901, 0.0224, 0.0858]})
    sessions = pd.DataFrame({"model": ["ALS", "GRU4Rec", "TwoTower"], "mrr@20": [0.15, 0.3234, 0.297]})
    assert script("demo_comparison").comparison_headline(visitors, sessions, 13, 4, 14) == (
        "nDCG@10: Hybrid 0.0901 best, SASRec 0.0858 next; session MRR@20: GRU4Rec 0.3234 best, "
        "TwoTower 0.2970 next; checks 13/14 yes (4 of them within noise)")


def test_baselines_speed_headline_judges_only_the_models_with_a_latency_target(script):
    frame = pd.DataFrame({"model": ["Popular", "ALS", "Item2Vec", "SessionKNN"],
                          "evaluate_2000_s": [4.5, 12.0, 2.7, 13.7], "recommend_p99_ms": [0.52, 2.2, 3.3, 6.0]})
    speed_headline = script("baselines").speed_headline
    assert speed_headline(frame) == (
        "ALS evaluate(2,000 visitors) 12.00 s (target < 10 s: NOT met); recommend p99 Popular 0.52, ALS 2.20, "
        "Item2Vec 3.30, SessionKNN 6.00 ms (target < 5 ms for Popular/ALS/Item2Vec: met)")
    frame.loc[2, "recommend_p99_ms"] = 5.0
    assert speed_headline(frame).endswith("Popular/ALS/Item2Vec: NOT met)")


def test_sequential_speed_headline_reports_the_largest_scale(script):
    frame = pd.DataFrame({"scale": ["demo", "demo", "full", "full"], "model": ["GRU4Rec", "SASRec"] * 2,
                          "items": [9974, 9974, 227233, 227233], "train_events_per_s": [61774, 76143, 97889, 55280],
                          "session_p99_ms": [0.77, 0.92, 13.618, 8.5836]})
    assert script("sequential_speed").speed_headline(frame) == (
        "full scale (227,233 items): GRU4Rec 97,889 events/s, session p99 13.62 ms; SASRec 55,280 events/s, "
        "session p99 8.58 ms (targets >= 13k events/s, p99 < 20 ms)")


def test_yoochoose_headline_gives_mean_and_sd_over_seeds(script):
    yoochoose_headline = script("gru4rec_yoochoose").yoochoose_headline
    seeds = [(42, 0.66, 0.35, 20.0), (43, 0.68, 0.37, 22.0)]
    assert yoochoose_headline(seeds, 10) == (
        "Recall@20 0.6700 ± 0.0141, MRR@20 0.3600 ± 0.0141 over 2 seeds (official 0.664 / 0.353); fit 2.1 s/epoch")
    assert yoochoose_headline(seeds[1:], 10) == (
        "Recall@20 0.6800, MRR@20 0.3700, seed 43 (official 0.664 / 0.353); fit 2.2 s/epoch")


def test_api_fuzz_headline_says_defects_when_a_request_got_a_5xx(script):
    api_fuzz = script("api_fuzz")
    keyed = api_fuzz.Campaign("with the key", 0, 5, 120, Counter({200: 100, 422: 20}), [], [])
    keyless = api_fuzz.Campaign("without the key", 0, 5, 80, Counter({401: 80}), [], [])
    assert api_fuzz.headline([keyed, keyless], 50) == (
        "none found: 0 5xx, 0 check failures, 0 protected requests answered without 401, in 200 requests "
        "(with the key and without the key; at most 50 examples per operation)")
    keyed.statuses[500] += 2
    assert api_fuzz.headline([keyed, keyless], 50).startswith("defects found: 2 5xx, ")
