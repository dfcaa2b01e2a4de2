"""Progress bars: every tqdm bar funnelrec draws goes through :func:`progress_bar`.

One switch, ``settings.progress_bars`` (``FUNNELREC_PROGRESS_BARS=false``; ``funnelrec -q`` sets it
off), hides them all; a caller's own ``enabled=False`` (a model's ``show_progress``) hides one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from funnelrec.config import settings

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable``, drawn only when ``enabled`` and ``settings.progress_bars``.

    ``kwargs`` go to ``tqdm`` (``desc``, ``total``, ``unit``, ``leave``...).
    """
    return tqdm(iterable, disable=not (enabled and settings.progress_bars), **kwargs)
