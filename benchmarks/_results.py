"""Append a benchmark's results to ``benchmarks/RESULTS.md`` (append only, never rewritten)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"


def machine_description() -> str:
    """One line naming the platform, the processor and the CPU count."""
    processor = platform.processor() or platform.machine()
    return f"{platform.platform()}, {processor}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def append_results(title: str, command: str, body_markdown: str, path: Path = RESULTS_FILE) -> Path:
    """Append a ``## title`` section (date, machine, command, then ``body_markdown``) to ``path``."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n"
        f"- date: {now}\n"
        f"- machine: {machine_description()}\n"
        f"- command: `{command}`\n\n"
        f"{body_markdown.strip()}\n"
    )
    path = Path(path)
    is_new = not path.exists()
    with path.open("a", encoding="utf-8") as f:
        if is_new:
            f.write("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last.\n")
        f.write(section)
    return path
