"""Readable names of result columns, one mapping for the CLI tables, the HTML report and the charts.

A column is ``name`` or ``name@k``: ``precision@10`` reads ``P@10``. The ``Evaluator`` reports
``hit_rate``, ``mrr`` and ``coverage`` without ``@k``, at the length of its lists, which its
results carry as ``n_items``: :func:`metric_label` takes that cutoff and writes ``HR@20``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

__all__ = [
    "AT_LIST_LENGTH",
    "METRIC_DESCRIPTIONS",
    "METRIC_LABELS",
    "list_length",
    "metric_label",
    "metric_legend",
]

#: Column name (without ``@k``) -> the short label shown in table headers and chart legends.
METRIC_LABELS: dict[str, str] = {
    "precision": "P",
    "recall": "R",
    "ndcg": "nDCG",
    "hit_rate": "HR",
    "mrr": "MRR",
    "coverage": "Coverage",
    "fit_seconds": "Fit time",
    "seconds": "Eval time",
    "n_users": "Visitors",
    "n_events": "Events",
}
#: Label -> what it means, for the legend under a table.
METRIC_DESCRIPTIONS: dict[str, str] = {
    "P": "precision (share of the top k that the visitor went on to interact with)",
    "R": "recall (share of the visitor's or session's next items found in the top k)",
    "nDCG": "normalised discounted cumulative gain (hits weighted by rank)",
    "HR": "hit rate (share of visitors with at least one hit in the top k)",
    "MRR": "mean reciprocal rank of the first hit (0 past the cutoff)",
    "Coverage": "share of the catalogue that appears in some top-k list",
    "Fit time": "wall-clock training time",
}
#: Columns the Evaluator reports at its list length (``n_items``), without ``@k`` in the name.
AT_LIST_LENGTH: frozenset[str] = frozenset({"hit_rate", "mrr", "coverage"})


def list_length(frame: pd.DataFrame | None) -> int | None:
    """The ``n_items`` of a results frame when every row has the same one, else ``None``."""
    if frame is None or "n_items" not in frame.columns:
        return None
    values = pd.to_numeric(frame["n_items"], errors="coerce").dropna().unique()
    return int(values[0]) if len(values) == 1 else None


def metric_label(column: str, cutoff: int | None = None) -> str:
    """``'precision@10'`` -> ``'P@10'``; ``'hit_rate'`` with ``cutoff=20`` -> ``'HR@20'``.

    Unknown columns lose their underscores (``'n_events_unknown_target'`` -> ``'n events unknown
    target'``) rather than showing raw snake_case.
    """
    base, _, k = column.partition("@")
    label = METRIC_LABELS.get(base, base.replace("_", " "))
    if not k and cutoff is not None and base in AT_LIST_LENGTH:
        k = str(cutoff)
    return f"{label}@{k}" if k else label


def metric_legend(columns: Iterable[str]) -> str:
    """``'P: precision (...); nDCG: ...'`` for the labels of ``columns`` that have a description."""
    columns = list(columns)
    seen: list[str] = []
    for column in columns:
        label = METRIC_LABELS.get(column.partition("@")[0])
        if label in METRIC_DESCRIPTIONS and label not in seen:
            seen.append(label)
    parts = [f"{label}: {METRIC_DESCRIPTIONS[label]}" for label in seen]
    if any("@" in c or c.partition("@")[0] in AT_LIST_LENGTH for c in columns):
        parts.append("@k: computed on the top k items")
    return "; ".join(parts) + ("." if parts else "")
