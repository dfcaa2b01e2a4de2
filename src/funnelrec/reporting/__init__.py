"""Tables, charts and the HTML report of a run.

- :mod:`~funnelrec.reporting.charts`: model and session comparison bars (seed section 7),
  the data funnel, training time; ``funnel_counts`` behind the funnel chart.
- :mod:`~funnelrec.reporting.embeddings`: t-SNE map of item embeddings (seed section 8).
- :mod:`~funnelrec.reporting.html_report`: ``build_report``, one self-contained HTML page.

matplotlib, scikit-learn and Jinja2 are imported only when something is drawn or rendered.
"""

from __future__ import annotations

from typing import Any

from funnelrec.reporting.charts import (
    figure_to_png,
    funnel_counts,
    plot_funnel,
    plot_model_comparison,
    plot_session_comparison,
    plot_training_time,
)
from funnelrec.reporting.html_report import build_report, explanation_card, png_data_uri

_EMBEDDINGS = ("plot_item_embeddings", "plot_model_embeddings")

__all__ = [
    "build_report",
    "explanation_card",
    "figure_to_png",
    "funnel_counts",
    "plot_funnel",
    "plot_item_embeddings",
    "plot_model_comparison",
    "plot_model_embeddings",
    "plot_session_comparison",
    "plot_training_time",
    "png_data_uri",
]


def __getattr__(name: str) -> Any:
    """The t-SNE functions, imported from :mod:`funnelrec.reporting.embeddings` on first use."""
    if name in _EMBEDDINGS:
        from funnelrec.reporting import embeddings

        return getattr(embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
