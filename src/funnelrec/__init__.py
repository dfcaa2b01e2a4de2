"""funnelrec: funnel-aware e-commerce recommendations.

The library stays quiet by default: it logs through loguru but disables its own
logger until an application (the CLI, a notebook) calls ``funnelrec.enable_logging()``.
"""

from __future__ import annotations

import sys

from loguru import logger

from funnelrec.threads import bound_openmp_spinning

__version__ = "0.1.0"

logger.disable("funnelrec")
bound_openmp_spinning()  # before torch loads OpenMP: spinning threads stall on a busy machine


def _write_above_progress_bars(message: str) -> None:
    # through tqdm.write, so that a line logged while a bar is drawn goes above the bar, not into it
    from tqdm import tqdm

    tqdm.write(message, end="", file=sys.stderr)


def enable_logging(level: str = "INFO") -> None:
    """Show funnelrec's log lines on stderr at ``level`` and above (above any progress bar)."""
    logger.enable("funnelrec")
    logger.remove()
    logger.add(_write_above_progress_bars, level=level, colorize=sys.stderr.isatty(),
               format="<green>{time:HH:mm:ss}</green> | <level>{level: <7}</level> | {message}")


__all__ = ["__version__", "enable_logging"]
