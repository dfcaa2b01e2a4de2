"""``benchmarks/_results.py``: the latest-figures table on top of RESULTS.md, the history below."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

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
