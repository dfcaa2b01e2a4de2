"""One self-contained HTML page of a run: data, model comparison, charts and explanations.

The page (``out_dir/index.html``) inlines its CSS and embeds every picture as a base64
``data:`` URI, so it opens from disk, offline, and can be mailed as one file. The PNGs are also
written beside it (``out_dir/*.png``) for reuse, e.g. in a README. Rendered with Jinja2,
autoescape on: model names, explanation texts and run info are escaped.
"""

from __future__ import annotations

import base64
import math
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from funnelrec.progress import progress_bar
from funnelrec.reporting import charts
from funnelrec.reporting.labels import (
    METRIC_DESCRIPTIONS,
    METRIC_LABELS,
    list_length,
    metric_label,
    metric_legend,
)

__all__ = [
    "RESULT_COLUMNS",
    "SESSION_COLUMNS",
    "build_report",
    "explanation_card",
    "png_data_uri",
]

#: Columns of the visitor-holdout table, in order (the seed's display columns, then more).
RESULT_COLUMNS: tuple[str, ...] = (
    "precision@10", "recall@10", "ndcg@10", "hit_rate", "mrr", "coverage", "fit_seconds",
)  # fmt: skip
#: Columns of the next-item-in-session table, in order.
SESSION_COLUMNS: tuple[str, ...] = (
    "recall@10", "mrr@10", "ndcg@10", "recall@20", "mrr@20", "ndcg@20", "coverage",
)  # fmt: skip
#: Columns where smaller is better (highlighted at their minimum).
LOWER_IS_BETTER: frozenset[str] = frozenset({"fit_seconds", "seconds"})

TEMPLATE_NAME = "report.html.j2"
INDEX_NAME = "index.html"
PNG_NAMES: dict[str, str] = {
    "comparison": "model_comparison.png",
    "session": "session_comparison.png",
    "embeddings": "item_embeddings.png",
    "funnel": "funnel.png",
    "training": "training_time.png",
}


# --------------------------------------------------------------------------- helpers
def png_data_uri(png: bytes | str | Path) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes or of a PNG file."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"not a PNG: {png if not isinstance(png, bytes) else 'the given bytes'}")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,  # the template's name ends in .j2, so select_autoescape would not match
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _format_value(column: str, value: Any) -> str:
    if value is None or (_is_number(value) and math.isnan(float(value))):
        return "n/a"
    if "seconds" in column and _is_number(value):
        return charts.format_seconds(float(value))
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if _is_number(value):
        return f"{float(value):.4f}"
    return str(value)


def _metric_table(
    frame: pd.DataFrame | None, columns: Sequence[str], sort_by: Sequence[str]
) -> dict | None:
    """Header and rows of a comparison table; the best value of each column is flagged."""
    if frame is None or not isinstance(frame, pd.DataFrame) or frame.empty:
        return None
    if "model" not in frame.columns:
        raise ValueError(f"a results frame needs a 'model' column; it has {list(frame.columns)}")
    shown = [c for c in columns if c in frame.columns]
    key = next((c for c in sort_by if c in frame.columns), None)
    table = frame.sort_values(key, ascending=False, kind="stable") if key else frame
    best: dict[str, set[int]] = {}
    for column in shown:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        if finite.sum() < 2:
            continue
        target = values[finite].min() if column in LOWER_IS_BETTER else values[finite].max()
        best[column] = set(
            np.flatnonzero(finite & np.isclose(values, target, rtol=1e-9, atol=1e-12))
        )
    rows = []
    for i, (_, record) in enumerate(table.iterrows()):  # one row per model: a handful
        cells = [{"text": _format_value(c, record[c]), "best": i in best.get(c, ())} for c in shown]
        rows.append({"model": str(record["model"]), "cells": cells})
    cutoff = list_length(frame)
    headers = []
    for column in shown:
        label = metric_label(column, cutoff)
        base_label = METRIC_LABELS.get(column.partition("@")[0], "")
        headers.append({
            "label": label,
            "title": METRIC_DESCRIPTIONS.get(base_label, label),
            "lower_is_better": column in LOWER_IS_BETTER,
        })
    return {"headers": headers, "rows": rows, "legend": metric_legend(shown)}


def _session_metrics(frame: pd.DataFrame | None) -> tuple[str, ...]:
    """The default session bars, or recall/mrr at the largest cutoff the frame has."""
    if frame is None or frame.empty:
        return ()
    if all(m in frame.columns for m in charts.DEFAULT_SESSION_METRICS):
        return charts.DEFAULT_SESSION_METRICS
    cutoffs = sorted(
        int(c.split("@")[1]) for c in frame.columns
        if c.startswith("recall@") and c.split("@")[1].isdigit() and f"mrr@{c.split('@')[1]}" in frame.columns
    )  # fmt: skip
    return (f"recall@{cutoffs[-1]}", f"mrr@{cutoffs[-1]}") if cutoffs else ()


def _data_summary(events: pd.DataFrame) -> dict[str, Any]:
    from funnelrec.data.synthetic import describe, format_description

    stats = describe(events)
    tiles = [
        ("events", f"{int(stats['n_events']):,}"),
        ("visitors", f"{int(stats['n_visitors']):,}"),
        ("items", f"{int(stats['n_items']):,}"),
    ]
    if "n_categories" in stats:
        tiles.append(("categories", f"{int(stats['n_categories']):,}"))
    if "n_sessions" in stats:
        tiles.append(("sessions", f"{int(stats['n_sessions']):,}"))
    if not pd.isna(stats.get("days")):
        tiles.append(("days", f"{float(stats['days']):,.1f}"))
    period = ""
    if not pd.isna(stats.get("start")):
        period = f"{stats['start']:%Y-%m-%d} to {stats['end']:%Y-%m-%d}"
    return {"tiles": tiles, "period": period, "text": format_description(stats)}


def _funnel_rows(events: pd.DataFrame) -> list[dict[str, str]]:
    counts = charts.funnel_counts(events)
    return [
        {
            "label": row["label"],
            "events": f"{int(row['events']):,}",
            "event_rate": charts.format_percent(float(row["event_rate"])),
            "visitors": f"{int(row['visitors']):,}",
            "visitor_rate": charts.format_percent(float(row["visitor_rate"])),
            "visitor_share": charts.format_percent(float(row["visitor_share"])),
        }
        for _, row in counts.iterrows()  # three funnel steps
    ]


def _confidence_level(confidence: float) -> str:
    return "high" if confidence >= 0.66 else "medium" if confidence >= 0.33 else "low"


def _normalise_card(raw: Mapping[str, Any], position: int) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"explanations[{position}] must be a dict, got {type(raw).__name__}")
    items = raw.get("items")
    if items is None:
        raise ValueError(f"explanations[{position}] has no 'items'; keys are {sorted(raw)}")
    out_items = []
    for item in items:
        reasons = []
        for reason in item.get("reasons", ()):
            if isinstance(reason, Mapping):
                reasons.append(
                    {"text": str(reason.get("text", "")), "type": str(reason.get("type", ""))}
                )
            else:
                reasons.append({"text": str(reason), "type": ""})
        summary = str(item.get("summary") or (reasons[0]["text"] if reasons else ""))
        # the summary ends with the leading reason ("Ranked by ALS. <reason>"): don't repeat it
        extra = reasons[1:] if reasons and summary.endswith(reasons[0]["text"]) else reasons
        try:
            confidence = float(item.get("confidence", 0.0))
        except (TypeError, ValueError):
            confidence = float("nan")
        confidence = 0.0 if math.isnan(confidence) else min(max(confidence, 0.0), 1.0)
        score = item.get("score")
        out_items.append(
            {
                "item_id": str(item.get("item_id", "?")),
                "score": "n/a" if score is None else f"{float(score):.4f}",
                "summary": summary,
                "reasons": extra,
                "confidence": confidence,
                "confidence_pct": f"{confidence * 100:.0f}",
                "confidence_level": _confidence_level(confidence),
            }
        )
    stage = str(raw.get("funnel_stage") or "unknown")
    visitor_id = raw.get("visitor_id")
    session = [str(i) for i in raw.get("session_item_ids") or ()]
    return {
        "visitor_id": None if visitor_id is None else str(visitor_id),
        # a card without a visitor is a brand-new visitor known only by the live session
        "visitor_label": "New visitor (no history)" if visitor_id is None else f"Visitor {visitor_id}",
        "session": f"Live session: viewing item{'s' if len(session) > 1 else ''} {', '.join(session)}"
        if session else "",
        "stage": stage,
        "stage_label": stage.replace("_", " "),
        "model": str(raw.get("model") or raw.get("model_name") or ""),
        "items": out_items,
    }


def explanation_card(
    explanations: Iterable[Any],
    *,
    visitor_id: int | None = None,
    funnel_stage: str | None = None,
    model: str | None = None,
    session_item_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One visitor's recommendations as a report card dict.

    ``explanations`` are :class:`~funnelrec.models.explainable.explainer.Explanation` objects
    or their ``to_dict()``; visitor, stage and model default to those of the first one.
    ``session_item_ids``: the live session the list answers (shown on the card).
    """
    items = [e if isinstance(e, Mapping) else e.to_dict() for e in explanations]
    first = items[0] if items else {}
    return {
        "visitor_id": visitor_id if visitor_id is not None else first.get("visitor_id"),
        "funnel_stage": funnel_stage or first.get("funnel_stage"),
        "model": model or first.get("model_name"),
        "session_item_ids": None if session_item_ids is None else list(session_item_ids),
        "items": items,
    }


def _image(
    out_dir: Path, key: str, title: str, make: Any, errors: list[str], bar: Any
) -> dict | None:
    """Draw one chart into ``out_dir`` with ``make(path)``; a failed chart is logged and skipped."""
    path = out_dir / PNG_NAMES[key]
    bar.set_postfix_str(key)
    started = time.perf_counter()
    try:
        make(path)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("report: skipping the {} chart: {}", key, exc)
        errors.append(f"{title}: {exc}")
        return None
    finally:
        bar.update()
    logger.debug("report: {} chart drawn in {:.1f}s", key, time.perf_counter() - started)
    return {"src": png_data_uri(path), "file": path.name, "alt": title}


# --------------------------------------------------------------------------- the report
def build_report(
    out_dir: str | Path,
    *,
    results: pd.DataFrame | None = None,
    session_results: pd.DataFrame | None = None,
    fit_seconds: Mapping[str, float] | None = None,
    events: pd.DataFrame | None = None,
    explanations: Sequence[Mapping[str, Any]] = (),
    embedding_png: str | Path | None = None,
    embedding_model: Any = None,
    category_tree: pd.DataFrame | None = None,
    title: str = "funnelrec report",
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and the charts as ``out_dir/*.png``.

    Parameters
    ----------
    out_dir:
        Folder of the report (created).
    results:
        ``Evaluator.evaluate`` rows, one per model (``DemoResult.results``): the visitor-holdout
        table and the comparison chart (seed section 7).
    session_results:
        ``Evaluator.evaluate_sessions`` rows (``DemoResult.session_results``): the
        next-item-in-session table and chart.
    fit_seconds:
        Model -> training seconds (``DemoResult.fit_seconds``); defaults to the ``fit_seconds``
        column of ``results``.
    events:
        The canonical events frame: the data summary (``describe``) and the funnel chart.
    explanations:
        Cards of sample visitors, each ``{visitor_id, funnel_stage, model, session_item_ids,
        items: [{item_id, score, summary, reasons, confidence}]}``; ``reasons`` are texts or
        ``Reason.to_dict()``; ``visitor_id`` ``None`` is a new visitor (no history), shown with
        the live ``session_item_ids``. :func:`explanation_card` builds one from ``Explanation``
        objects.
    embedding_png:
        A ready t-SNE picture (seed section 8), copied beside the page.
    embedding_model, category_tree:
        Instead of ``embedding_png``: a fitted model with item vectors, drawn with
        :func:`funnelrec.reporting.embeddings.plot_model_embeddings`.
    title:
        Page title.
    run_info:
        Extra key -> value lines for the header (scale, seed, git commit...); a ``date`` key
        replaces the generation time.

    Returns
    -------
    Path
        The path of ``index.html``.

    Sections whose input is missing are left out; a chart that cannot be drawn is skipped with
    a warning (logged, and listed at the end of the page) rather than failing the whole report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {str(k): v for k, v in (run_info or {}).items()}
    date = info.pop("date", None) or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    errors: list[str] = []
    cards = [_normalise_card(card, i) for i, card in enumerate(explanations)]

    results_table = _metric_table(results, RESULT_COLUMNS, ("ndcg@10",))
    session_metrics = _session_metrics(session_results)
    session_table = _metric_table(session_results, SESSION_COLUMNS, session_metrics[:1])

    images: dict[str, dict | None] = dict.fromkeys(PNG_NAMES)
    # one step per chart slot, drawn or not (the t-SNE map can take a minute)
    bar = progress_bar(total=len(PNG_NAMES), desc="report", unit="chart", leave=False)
    comparison_metrics = [
        m for m in charts.DEFAULT_METRICS if results is not None and m in results.columns
    ]
    if results_table and comparison_metrics:
        images["comparison"] = _image(
            out_dir,
            "comparison",
            "Model comparison (visitor holdout)",
            lambda p: charts.plot_model_comparison(
                results, p, comparison_metrics, "Model comparison: held-out visitors (top 10)"
            ),
            errors,
            bar,
        )
    if session_table and session_metrics:
        images["session"] = _image(
            out_dir,
            "session",
            "Next item in session",
            lambda p: charts.plot_session_comparison(
                session_results,
                p,
                session_metrics,
                f"Next item in session (cutoff {session_metrics[0].split('@')[1]})",
            ),
            errors,
            bar,
        )
    if embedding_png is not None:
        source = Path(embedding_png)
        target = out_dir / PNG_NAMES["embeddings"]
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        images["embeddings"] = {
            "src": png_data_uri(target),
            "file": target.name,
            "alt": "Item embeddings (t-SNE)",
        }
        bar.update()
    elif embedding_model is not None:
        if category_tree is None:
            raise ValueError("embedding_model needs category_tree (to colour items by category)")
        from funnelrec.reporting.embeddings import plot_model_embeddings

        images["embeddings"] = _image(
            out_dir,
            "embeddings",
            "Item embeddings (t-SNE)",
            lambda p: plot_model_embeddings(embedding_model, category_tree, p),
            errors,
            bar,
        )
    summary = funnel_rows = None
    if events is not None:
        summary = _data_summary(events)
        funnel_rows = _funnel_rows(events)
        images["funnel"] = _image(
            out_dir, "funnel", "Shopping funnel", lambda p: charts.plot_funnel(events, p), errors, bar
        )
    if not fit_seconds and results is not None and {"model", "fit_seconds"} <= set(results.columns):
        fit_seconds = dict(
            zip(results["model"].astype(str), results["fit_seconds"].astype(float), strict=True)
        )
    if fit_seconds:
        images["training"] = _image(
            out_dir,
            "training",
            "Training time",
            lambda p: charts.plot_training_time(fit_seconds, p),
            errors,
            bar,
        )
    bar.update(bar.total - bar.n)  # the slots with nothing to draw
    bar.close()

    html = (
        _environment()
        .get_template(TEMPLATE_NAME)
        .render(
            title=title,
            date=date,
            run_info=[(k, _format_value(k, v)) for k, v in info.items()],
            summary=summary,
            funnel_rows=funnel_rows,
            results_table=results_table,
            session_table=session_table,
            images=images,
            cards=cards,
            errors=errors,
        )
    )
    index = out_dir / INDEX_NAME
    index.write_text(html, encoding="utf-8")
    logger.info("Report written to {}", index)
    return index
