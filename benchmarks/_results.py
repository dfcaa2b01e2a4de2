"""Record a benchmark run in ``benchmarks/RESULTS.md``: the latest-figures table, then the history.

The file has three parts: an intro; a table of the latest figure of each benchmark between
``<!-- latest:begin -->`` and ``<!-- latest:end -->`` (one row per section title: benchmark,
latest figure, date, command); the history, one ``## title`` section per run, newest last.
:func:`append_results` appends a section to the history (the history itself is never
rewritten) and replaces the title's row in the table (existing rows keep their order and their
text; a new title gets a row at the end). A file without the markers gets the table inserted
right after its intro, before the first ``## `` section.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_BEGIN = "<!-- latest:begin -->"
TABLE_END = "<!-- latest:end -->"
TABLE_HEADER = "| benchmark | latest figure | date | command |\n|---|---|---|---|\n"
#: The latest-figure cell of a run that passed no headline.
NO_HEADLINE = "no headline given; see its latest section below"
INTRO = (
    "# Benchmark results\n\n"
    "The table is the latest figure of each benchmark, rewritten by the scripts in `benchmarks/` "
    "(`_results.append_results`) on every recorded run.\nBelow it, the history: one section per "
    "run, newest last, never rewritten.\n"
)
#: A table cell separator: a ``|`` that is not escaped as ``\\|``.
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_DELIMITER_ROW = re.compile(r"\|(\s*:?-+:?\s*\|)+")


def machine_description() -> str:
    """One line naming the platform, the processor and the CPU count."""
    processor = platform.processor() or platform.machine()
    return f"{platform.platform()}, {processor}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, stripped."""
    return " ".join(text.split())


def escape_cell(text: str) -> str:
    """``text`` as one table cell: on one line, every ``|`` escaped (backticks kept: code spans)."""
    return one_line(text).replace("|", r"\|")


def code_cell(text: str) -> str:
    """``text`` as a code span in a table cell, with a fence longer than any backtick run in it."""
    text = one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", r"\|")


def row_title(line: str) -> str | None:
    """The benchmark title of a table row (first cell, unescaped), or ``None`` for a non-row."""
    if not line.startswith("|"):
        return None
    cells = _CELL_SEPARATOR.split(line.rstrip("\n"))
    if len(cells) < 3:
        return None
    return cells[1].strip().replace(r"\|", "|")


def table_row(title: str, headline: str | None, date: str, command: str) -> str:
    """One row of the latest-figures table (``NO_HEADLINE`` when ``headline`` is empty)."""
    figure = escape_cell(headline) if headline and headline.strip() else NO_HEADLINE
    return f"| {escape_cell(title)} | {figure} | {date} | {code_cell(command)} |\n"


def split_results(text: str) -> tuple[str, list[str], str]:
    """``text`` as ``(intro, table rows, history)``; the history is returned byte for byte.

    The history starts at the first ``## `` line; the markers are looked for only before it, so
    a section that quotes them changes nothing. Without markers, the rows are empty and the
    intro is everything before the history.
    """
    parts = text.split("\n")  # not splitlines(): it also splits on \r, \f, \u2028 ...
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    history_at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    begin = next((i for i in range(history_at) if lines[i].strip() == TABLE_BEGIN), None)
    if begin is None:
        return "".join(lines[:history_at]), [], "".join(lines[history_at:])
    end = next((i for i in range(begin + 1, history_at) if lines[i].strip() == TABLE_END), None)
    header = TABLE_HEADER.splitlines(keepends=True)[0]
    rows = [
        line if line.endswith("\n") else line + "\n"
        for line in lines[begin + 1 : history_at if end is None else end]
        if row_title(line) is not None and line != header and not _DELIMITER_ROW.fullmatch(line.strip())
    ]
    history = "".join(lines[history_at:] if end is None else lines[end + 1 :])
    return "".join(lines[:begin]), rows, history


def render_results(intro: str, rows: list[str], history: str) -> str:
    """The file from its parts (inverse of :func:`split_results`)."""
    intro = intro.rstrip("\n") + "\n\n" if intro.strip() else INTRO + "\n"
    table = f"{TABLE_BEGIN}\n\n{TABLE_HEADER}{''.join(rows)}\n{TABLE_END}\n"
    return intro + table + (history if history.startswith("\n") or not history else "\n" + history)


def upsert_row(rows: list[str], title: str, row: str) -> list[str]:
    """``rows`` with the row of ``title`` replaced by ``row`` in place (or ``row`` appended)."""
    out, placed = [], False
    for existing in rows:
        if row_title(existing) == title:
            if not placed:  # a duplicate of a hand-edited table goes: one row per benchmark
                out.append(row)
                placed = True
            continue
        out.append(existing)
    return out if placed else [*out, row]


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` so two runs ending together both get recorded."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unlocked, as before
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash leaves either the old file or the new one, never a half-written history.
    """
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def append_results(
    title: str,
    command: str,
    body_markdown: str,
    headline: str | None = None,
    path: Path = RESULTS_FILE,
) -> Path:
    """Record one run: a ``## title`` section appended to the history, and the title's table row.

    Parameters
    ----------
    title
        The benchmark's name: the section heading and the key of its table row (whitespace
        runs, newlines included, become one space).
    command
        The command line that produced the run.
    body_markdown
        The section's body, after its date, machine and command lines.
    headline
        A one-line summary of the run's figures for the table, e.g. ``"p99 12.1 ms at 100
        req/s, 0 errors"``; ``None`` leaves a pointer to the section instead.
    path
        The results file; created with an intro if missing.

    Returns
    -------
    Path
        ``path``.
    """
    title = one_line(title)
    if not title:
        raise ValueError("append_results: the title is empty")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n"
        f"- date: {now}\n"
        f"- machine: {machine_description()}\n"
        f"- command: `{command}`\n\n"
        f"{body_markdown.strip()}\n"
    )
    path = Path(path)
    with _directory_lock(path.parent):
        text = path.read_bytes().decode("utf-8") if path.exists() else ""  # no newline translation
        intro, rows, history = split_results(text)
        rows = upsert_row(rows, title, table_row(title, headline, now, command))
        write_atomically(path, render_results(intro, rows, history + section))
    return path
