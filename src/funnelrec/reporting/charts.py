"""Charts of a run: model comparison (seed section 7), session comparison, data funnel, fit time.

Drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global backend or style
change, no window), like :mod:`funnelrec.reporting.embeddings`. Every chart has two forms:

- ``*_figure(...) -> Figure``: the figure itself, for notebooks or :func:`figure_to_png`
  (in-memory PNG bytes, e.g. for a ``data:`` URI);
- ``plot_*(..., path) -> Path``: the same figure saved as a PNG at ``path`` (folders created).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from funnelrec.data.schema import EVENT, EVENT_TYPES, VISITOR_ID, event_codes
from funnelrec.reporting.labels import list_length, metric_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_SESSION_METRICS",
    "FUNNEL_LABELS",
    "figure_to_png",
    "format_percent",
    "format_seconds",
    "funnel_counts",
    "funnel_figure",
    "model_comparison_figure",
    "plot_funnel",
    "plot_model_comparison",
    "plot_session_comparison",
    "plot_training_time",
    "save_png",
    "session_comparison_figure",
    "training_time_figure",
]

#: Bars of the visitor-holdout comparison (the seed notebook's section 7).
DEFAULT_METRICS: tuple[str, ...] = ("precision@10", "recall@10", "ndcg@10")
#: Bars of the next-item-in-session comparison.
DEFAULT_SESSION_METRICS: tuple[str, ...] = ("recall@20", "mrr@20")
#: Funnel step -> label on the charts.
FUNNEL_LABELS: dict[str, str] = {
    "view": "Views",
    "addtocart": "Add-to-carts",
    "transaction": "Transactions",
}

DPI = 110
#: Widest a chart is drawn (inches): the report shows pictures at most ~1,060 px wide, so a chart
#: no wider than that is shown at its own size and its text stays as large as it was drawn.
MAX_WIDTH_INCHES = 9.6
#: Smallest text on any chart, in points (12 px at :data:`DPI`).
MIN_FONT_SIZE = 8.0
#: A colour-blind-safe palette (Okabe-Ito), in bar order.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
)  # fmt: skip
FUNNEL_COLOURS: tuple[str, ...] = ("#4C72B0", "#DD8452", "#55A868")
TEXT_GREY = "#555555"
#: ``plot_training_time`` switches to a log axis when the slowest model is this many times
#: slower than the fastest.
LOG_SCALE_SPREAD = 30.0

PathArg = str | PathLike[str]


# --------------------------------------------------------------------------- saving
def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: PathArg) -> Path:
    """Save ``figure`` as a PNG at ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def figure_to_png(figure: Figure) -> bytes:
    """The PNG bytes of ``figure``, without touching the disk."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _clean_axes(ax: Axes, grid_axis: str) -> None:
    ax.set_axisbelow(True)
    ax.grid(axis=grid_axis, color="#dddddd", linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color("#999999")
    ax.spines["bottom"].set_color("#999999")


# --------------------------------------------------------------------------- grouped bars
def _check_metric_frame(frame: pd.DataFrame, metrics: Sequence[str], name: str) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one column")
    if "model" not in frame.columns:
        raise ValueError(f"{name} needs a 'model' column; it has {list(frame.columns)}")
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks metric column(s) {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{name} has no rows (no models to compare)")
    return metrics


def _grouped_bars(
    frame: pd.DataFrame, metrics: Sequence[str], sort_by: str | None, title: str, name: str
) -> Figure:
    metrics = _check_metric_frame(frame, metrics, name)
    sort_by = sort_by if sort_by is not None else metrics[0]
    if sort_by not in frame.columns:
        raise ValueError(
            f"sort_by={sort_by!r} is not a column of {name}; it has {list(frame.columns)}"
        )
    table = frame.sort_values(sort_by, ascending=False, kind="stable", na_position="last")
    models = table["model"].astype(str).tolist()
    values = table[metrics].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)

    n_models, n_metrics = values.shape
    cutoff = list_length(frame)
    group_width = 0.8
    width = group_width / n_metrics
    figure_width = max(7.0, min(MAX_WIDTH_INCHES, 1.6 + n_models * (0.55 + 0.45 * n_metrics)))
    # value labels turn upright when a bar is narrower than "0.123" written across
    bar_points = figure_width * 72 * 0.85 / n_models * width
    upright = bar_points < 27
    figure = _new_figure(figure_width, 6.0)
    ax = figure.add_subplot()
    x = np.arange(n_models)
    for i, metric in enumerate(metrics):
        offset = (i - (n_metrics - 1) / 2) * width
        bars = ax.bar(
            x + offset,
            np.nan_to_num(values[:, i]),
            width * 0.92,
            label=metric_label(metric, cutoff),
            color=PALETTE[i % len(PALETTE)],
        )
        labels = ["n/a" if math.isnan(v) else f"{v:.3f}" for v in values[:, i]]
        ax.bar_label(
            bars,
            labels=labels,
            padding=2,
            fontsize=MIN_FONT_SIZE if upright else 9,
            rotation=90 if upright else 0,
            color="#333333",
        )
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    ax.set_ylim(0, (top if top > 0 else 1.0) * (1.3 if upright else 1.15))
    ax.set_xticks(x)
    rotate = n_models > 4 or max(len(m) for m in models) > 12
    ax.set_xticklabels(
        models, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=11
    )
    ax.tick_params(axis="y", labelsize=10)
    ax.set_xlabel(f"Model (sorted by {metric_label(sort_by, cutoff)})", fontsize=11)
    ax.set_ylabel("Score", fontsize=11)
    figure.suptitle(title, fontsize=14, fontweight="bold", x=0.01, ha="left")
    ax.legend(
        ncols=min(n_metrics, 6),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        frameon=False,
        fontsize=11,
        borderaxespad=0.2,
    )
    _clean_axes(ax, "y")
    return figure


def model_comparison_figure(
    results: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str = "Model comparison",
    sort_by: str | None = None,
) -> Figure:
    """Grouped bars of ``metrics`` per model (the seed's section 7), best ``sort_by`` first.

    ``sort_by`` defaults to ``ndcg@10`` when ``results`` has it, else the first metric.
    """
    if sort_by is None and isinstance(results, pd.DataFrame):
        sort_by = "ndcg@10" if "ndcg@10" in results.columns else None
    return _grouped_bars(results, metrics, sort_by, title, "results")


def plot_model_comparison(
    results: pd.DataFrame,
    path: PathArg,
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str = "Model comparison",
    sort_by: str | None = None,
) -> Path:
    """Save :func:`model_comparison_figure` as a PNG at ``path``.

    Parameters
    ----------
    results:
        One row per model: a ``model`` column and the ``metrics`` columns (``Evaluator.evaluate``
        results, as ``DemoResult.results``).
    path:
        Where the PNG goes.
    metrics:
        Columns drawn as bars, one colour each.
    title:
        Chart title.
    sort_by:
        Models are ordered by this column, best first (default ``ndcg@10`` when present).
    """
    return save_png(model_comparison_figure(results, metrics, title, sort_by), path)


def session_comparison_figure(
    session_results: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_SESSION_METRICS,
    title: str = "Next item in session",
) -> Figure:
    """Grouped bars of the next-item-in-session metrics per model, best first metric first."""
    return _grouped_bars(session_results, metrics, None, title, "session_results")


def plot_session_comparison(
    session_results: pd.DataFrame,
    path: PathArg,
    metrics: Sequence[str] = DEFAULT_SESSION_METRICS,
    title: str = "Next item in session",
) -> Path:
    """Save :func:`session_comparison_figure` (``Evaluator.evaluate_sessions`` results) as PNG."""
    return save_png(session_comparison_figure(session_results, metrics, title), path)


# --------------------------------------------------------------------------- funnel
def funnel_counts(events: pd.DataFrame) -> pd.DataFrame:
    """Event counts and distinct visitors at each funnel step, with conversion rates.

    Returns one row per step (index ``view, addtocart, transaction``, in funnel order) with
    columns ``label``, ``events``, ``visitors`` (distinct visitors with at least one event of
    the step), ``event_rate`` and ``visitor_rate`` (the share of the previous step's events or
    visitors; 1.0 on the first step) and ``visitor_share`` (visitors as a share of the first
    step's visitors). Rates are NaN where the denominator is 0. A step's visitors are counted
    whether or not they went through the steps above it.
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in (VISITOR_ID, EVENT) if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s) {missing}; it has {list(events.columns)}")
    codes = event_codes(events) if len(events) else np.empty(0, dtype=np.int8)
    n_steps = len(EVENT_TYPES)
    event_counts = np.bincount(codes, minlength=n_steps).astype(np.int64)
    pairs = pd.DataFrame(
        {"code": codes, "visitor": events[VISITOR_ID].to_numpy()}
    ).drop_duplicates()
    visitor_counts = np.bincount(pairs["code"].to_numpy(), minlength=n_steps).astype(np.int64)

    def rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    previous_events = np.concatenate(([event_counts[0]], event_counts[:-1]))
    previous_visitors = np.concatenate(([visitor_counts[0]], visitor_counts[:-1]))
    return pd.DataFrame(
        {
            "label": [FUNNEL_LABELS[step] for step in EVENT_TYPES],
            "events": event_counts,
            "visitors": visitor_counts,
            "event_rate": rate(event_counts, previous_events),
            "visitor_rate": rate(visitor_counts, previous_visitors),
            "visitor_share": rate(visitor_counts, np.full(n_steps, visitor_counts[0])),
        },
        index=pd.Index(list(EVENT_TYPES), name="step"),
    )


def format_percent(value: float) -> str:
    """``0.5`` -> ``'50%'``, ``0.123`` -> ``'12.3%'``, ``0.0123`` -> ``'1.23%'``, ``1`` -> ``'100%'``, NaN -> ``'n/a'``."""
    if math.isnan(value):
        return "n/a"
    text = f"{value:.1%}" if value == 0 or abs(value) >= 0.1 else f"{value:.2%}"
    return text.replace(".0%", "%")


def _draw_funnel(
    ax: Axes,
    labels: list[str],
    counts: np.ndarray,
    rates: np.ndarray,
    first_share: np.ndarray,
    heading: str,
) -> None:
    n = len(counts)
    top = counts.max() if len(counts) and counts.max() > 0 else 1
    widths = np.maximum(counts / top, 0.006 * (counts > 0))
    y = np.arange(n)
    ax.barh(y, np.ones(n), left=-0.5, height=0.62, color="#eef1f4")  # the full width, for scale
    ax.barh(y, widths, left=-widths / 2, height=0.62, color=FUNNEL_COLOURS[:n])
    for i in range(n):
        text = f"{counts[i]:,}"
        if i:
            text += f"  ({format_percent(first_share[i])} of top)"
        if widths[i] >= 0.55:
            ax.text(
                0,
                i,
                text,
                ha="center",
                va="center",
                color="white",
                fontsize=11,
                fontweight="bold",
            )
        else:
            ax.text(
                widths[i] / 2 + 0.03, i, text, ha="left", va="center", color="#222222", fontsize=11
            )
        if i:
            ax.annotate(
                f"\u2193 {format_percent(rates[i])} of previous step",
                (0, i - 0.5),
                ha="center",
                va="center",
                fontsize=10,
                color=TEXT_GREY,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none"},
            )
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=11)
    ax.invert_yaxis()
    ax.set_xlim(-0.52, 0.9)
    ax.set_ylim(n - 0.5, -0.6)
    ax.set_xticks([])
    ax.set_title(heading, fontsize=12, loc="left")
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)


def funnel_figure(events: pd.DataFrame, title: str = "Shopping funnel") -> Figure:
    """Two horizontal funnels side by side: events per step, and distinct visitors per step.

    Bar widths are linear in the counts (a sliver stays visible); each bar is labelled with its
    count and its share of the top step, and each gap with the conversion from the step above.
    """
    counts = funnel_counts(events)
    labels = counts["label"].tolist()
    figure = _new_figure(MAX_WIDTH_INCHES, 4.6)
    left, right = figure.subplots(1, 2)
    _draw_funnel(
        left,
        labels,
        counts["events"].to_numpy(),
        counts["event_rate"].to_numpy(),
        counts["events"].to_numpy() / max(int(counts["events"].iloc[0]), 1),
        "Events",
    )
    _draw_funnel(
        right,
        labels,
        counts["visitors"].to_numpy(),
        counts["visitor_rate"].to_numpy(),
        counts["visitor_share"].fillna(0.0).to_numpy(),
        "Visitors reaching the step",
    )
    figure.suptitle(title, fontsize=14, fontweight="bold", x=0.01, ha="left")
    return figure


def plot_funnel(events: pd.DataFrame, path: PathArg, title: str = "Shopping funnel") -> Path:
    """Save :func:`funnel_figure` of a canonical events frame as a PNG at ``path``."""
    return save_png(funnel_figure(events, title), path)


# --------------------------------------------------------------------------- training time
def format_seconds(seconds: float) -> str:
    """``0.042`` -> ``'42 ms'``, ``3.21`` -> ``'3.2 s'``, ``125`` -> ``'2 min 5 s'``."""
    if math.isnan(seconds):
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min" if rest // 60 else f"{hours} h"


#: Tick positions (seconds) and labels of the log-scale time axis.
_TIME_TICKS: dict[float, str] = {
    1e-3: "1 ms", 1e-2: "10 ms", 0.1: "100 ms", 1.0: "1 s", 10.0: "10 s", 60.0: "1 min",
    600.0: "10 min", 3600.0: "1 h", 36_000.0: "10 h", 86_400.0: "1 day",
}  # fmt: skip


def training_time_figure(fit_seconds: Mapping[str, float], title: str = "Training time") -> Figure:
    """Horizontal bars of seconds per model, slowest on top; log axis when the spread is large."""
    if not isinstance(fit_seconds, Mapping):
        raise TypeError(
            f"fit_seconds must be a mapping model -> seconds, got {type(fit_seconds).__name__}"
        )
    if not fit_seconds:
        raise ValueError("fit_seconds is empty (no models to draw)")
    items = sorted(((str(k), float(v)) for k, v in fit_seconds.items()), key=lambda kv: kv[1])
    names = [k for k, _ in items]
    seconds = np.array([v for _, v in items], dtype=np.float64)
    bad = [k for k, v in items if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"fit_seconds must be finite and >= 0, got bad values for {bad}")
    positive = seconds[seconds > 0]
    log = len(positive) > 1 and positive.max() / positive.min() >= LOG_SCALE_SPREAD
    floor = positive.min() / 2 if len(positive) else 1e-3
    drawn = np.maximum(seconds, floor) if log else seconds

    figure = _new_figure(8.5, max(2.8, 1.4 + 0.5 * len(names)))
    ax = figure.add_subplot()
    y = np.arange(len(names))
    bars = ax.barh(y, drawn, height=0.6, color=PALETTE[0])
    ax.bar_label(bars, labels=[format_seconds(s) for s in seconds], padding=4, fontsize=10)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=11)
    ax.tick_params(axis="x", labelsize=10)
    if log:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        ax.set_xscale("log")
        ax.set_xlim(floor / 1.5, drawn.max() * 6)
        low, high = ax.get_xlim()
        ticks = [t for t in _TIME_TICKS if low <= t <= high]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _TIME_TICKS.get(value, "")))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("Fit time (seconds, log scale)", fontsize=11)
    else:
        ax.set_xlim(0, (drawn.max() if drawn.max() > 0 else 1.0) * 1.2)
        ax.set_xlabel("Fit time (seconds)", fontsize=11)
    ax.set_title(title, fontsize=14, fontweight="bold", loc="left")
    _clean_axes(ax, "x")
    ax.tick_params(axis="y", length=0)
    return figure


def plot_training_time(
    fit_seconds: Mapping[str, float], path: PathArg, title: str = "Training time"
) -> Path:
    """Save :func:`training_time_figure` (``DemoResult.fit_seconds``) as a PNG at ``path``."""
    return save_png(training_time_figure(fit_seconds, title), path)
