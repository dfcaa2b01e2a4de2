"""Charts and the HTML report on small hand-made frames."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.schema import to_canonical
from funnelrec.reporting import build_report, charts, explanation_card, funnel_counts
from funnelrec.reporting.html_report import png_data_uri

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["Popular", "ALS", "<b>x</b>"],
            "precision@10": [0.0412, 0.0655, 0.05],
            "recall@10": [0.1234, 0.2345, 0.2],
            "ndcg@10": [0.0871, 0.1987, 0.3],
            "hit_rate": [0.3, 0.45, 0.4],
            "mrr": [0.11, 0.21, 0.19],
            "coverage": [0.01, 0.35, 0.2],
            "fit_seconds": [0.004, 1.5, 0.2],
        }
    )


@pytest.fixture(scope="module")
def session_results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["Popular", "ALS", "<b>x</b>"],
            "recall@20": [0.3111, 0.4222, 0.4],
            "mrr@20": [0.1, 0.2, 0.15],
            "coverage": [0.1, 0.9, 0.5],
            "n_events": [400, 400, 400],
        }
    )


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    """4 visitors: 7 views (4 visitors), 4 add-to-carts (3 visitors), 3 transactions (2)."""
    rows = [
        # visitor, event, item, transaction
        (1, "view", 10, None), (1, "view", 11, None), (1, "addtocart", 10, None),
        (1, "transaction", 10, 100),
        (2, "view", 10, None), (2, "view", 12, None), (2, "addtocart", 12, None),
        (3, "view", 11, None),
        (4, "view", 12, None), (4, "view", 12, None), (4, "addtocart", 12, None),
        (4, "addtocart", 11, None), (4, "transaction", 12, 101), (4, "transaction", 11, 101),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["visitor_id", "event", "item_id", "transaction_id"])
    frame["timestamp"] = 1_430_000_000_000 + np.arange(len(frame)) * 60_000
    frame["category_id"] = frame["item_id"] % 2
    return to_canonical(frame)


@pytest.fixture(scope="module")
def explanations() -> list[dict]:
    return [
        {
            "visitor_id": 1,
            "funnel_stage": "buyer",
            "model": "ALS",
            "items": [
                {
                    "item_id": 12,
                    "score": 0.91,
                    "summary": "Shoppers who bought item 10 also bought item 12.",
                    "reasons": [
                        "Shoppers who bought item 10 also bought item 12.",
                        "Popular in category 0.",
                    ],
                    "confidence": 0.8,
                },
                {
                    "item_id": 11,
                    "score": 0.5,
                    "summary": "Beware <script>alert(1)</script> texts.",
                    "reasons": [],
                    "confidence": 0.2,
                },
            ],
        },
        {
            "visitor_id": 3,
            "funnel_stage": "browser",
            "model": "Popular",
            "items": [
                {
                    "item_id": 10,
                    "score": 3.0,
                    "summary": "Popular with other shoppers.",
                    "reasons": [
                        {
                            "type": "popularity",
                            "text": "Popular with other shoppers.",
                            "weight": 1.0,
                        }
                    ],
                    "confidence": 0.5,
                },
            ],
        },
    ]


# --------------------------------------------------------------------------- funnel numbers
def test_funnel_counts_exact(events):
    counts = funnel_counts(events)
    assert counts.index.tolist() == ["view", "addtocart", "transaction"]
    assert counts["label"].tolist() == ["Views", "Add-to-carts", "Transactions"]
    assert counts["events"].tolist() == [7, 4, 3]
    assert counts["visitors"].tolist() == [4, 3, 2]
    np.testing.assert_allclose(counts["event_rate"], [1.0, 4 / 7, 3 / 4])
    np.testing.assert_allclose(counts["visitor_rate"], [1.0, 3 / 4, 2 / 3])
    np.testing.assert_allclose(counts["visitor_share"], [1.0, 3 / 4, 2 / 4])


def test_funnel_counts_ignores_category_order_and_empty(events):
    shuffled = events.assign(event=events["event"].astype(str).astype("category"))
    assert funnel_counts(shuffled)["events"].tolist() == [7, 4, 3]
    empty = funnel_counts(events.iloc[:0])
    assert empty["events"].tolist() == [0, 0, 0]
    assert empty["visitors"].tolist() == [0, 0, 0]
    assert empty["event_rate"].isna().all()


def test_funnel_counts_names_missing_column(events):
    with pytest.raises(ValueError, match="visitor_id"):
        funnel_counts(events.drop(columns="visitor_id"))


# --------------------------------------------------------------------------- charts
def test_each_chart_writes_a_png(tmp_path, results, session_results, events):
    paths = [
        charts.plot_model_comparison(results, tmp_path / "a" / "comparison.png"),
        charts.plot_session_comparison(session_results, tmp_path / "session.png"),
        charts.plot_funnel(events, tmp_path / "funnel.png"),
        charts.plot_training_time(
            {"Popular": 0.004, "ALS": 1.5, "SASRec": 120.0}, tmp_path / "log.png"
        ),
        charts.plot_training_time({"Popular": 1.0, "ALS": 2.0}, str(tmp_path / "linear.png")),
    ]
    for path in paths:
        assert isinstance(path, Path)
        assert_png(path)


def test_in_memory_png(results):
    data = charts.figure_to_png(charts.model_comparison_figure(results, metrics=["ndcg@10"]))
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000
    assert png_data_uri(data).startswith("data:image/png;base64,iVBORw0KGgo")


def test_chart_input_errors(tmp_path, results):
    with pytest.raises(ValueError, match=r"map@10"):
        charts.plot_model_comparison(results, tmp_path / "x.png", metrics=("ndcg@10", "map@10"))
    with pytest.raises(ValueError, match="model"):
        charts.plot_model_comparison(results.drop(columns="model"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        charts.plot_model_comparison(results.iloc[:0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="ALS"):
        charts.plot_training_time({"Popular": 1.0, "ALS": -2.0}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        charts.plot_training_time({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0421, "42 ms"),
        (3.21, "3.2 s"),
        (125, "2 min 5 s"),
        (600, "10 min"),
        (3900, "1 h 5 min"),
        (math.nan, "n/a"),
    ],
)
def test_format_seconds(seconds, text):
    assert charts.format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "100%"), (0.5, "50%"), (0.123, "12.3%"), (0.0123, "1.23%"), (math.nan, "n/a")],
)
def test_format_percent(value, text):
    assert charts.format_percent(value) == text


# --------------------------------------------------------------------------- HTML report
@pytest.fixture(scope="module")
def report(tmp_path_factory, results, session_results, events, explanations) -> Path:
    out_dir = tmp_path_factory.mktemp("report")
    embedding = charts.plot_training_time({"a": 1.0}, out_dir.parent / "premade_tsne.png")
    return build_report(
        out_dir,
        results=results,
        session_results=session_results,
        fit_seconds={"Popular": 0.004, "ALS": 1.5, "<b>x</b>": 0.2},
        events=events,
        explanations=explanations,
        embedding_png=embedding,
        run_info={"scale": "tiny", "date": "2025-01-02 03:04 UTC", "note": "<i>raw</i>"},
    )


def test_report_files(report):
    assert report.name == "index.html" and report.is_file()
    names = {p.name for p in report.parent.glob("*.png")}
    assert names == {
        "model_comparison.png",
        "session_comparison.png",
        "funnel.png",
        "training_time.png",
        "item_embeddings.png",
    }
    for path in report.parent.glob("*.png"):
        assert_png(path, min_bytes=2_000)


def test_report_content(report):
    html = report.read_text(encoding="utf-8")
    for name in ("Popular", "ALS"):
        assert f"<td>{name}</td>" in html
    for value in ("0.1234", "0.2345", "0.0871", "0.4222", "1.5 s"):
        assert value in html
    assert "2025-01-02 03:04 UTC" in html and "tiny" in html
    assert "Shoppers who bought item 10 also bought item 12." in html
    assert "Popular in category 0." in html
    assert "Popular with other shoppers." in html
    assert "Visitor 3" in html and "stage-browser" in html and "stage-buyer" in html
    assert 'style="width: 80%"' in html  # confidence bar
    # the funnel table and the data summary
    assert "Add-to-carts" in html and "4.40%" not in html and "75%" in html
    # best value per column: ndcg@10 0.3000 (<b>x</b>), fit_seconds 4 ms (Popular, lower is better)
    assert 'class="num best">0.3000<' in html
    assert 'class="num best">4 ms<' in html
    assert 'class="num best">0.0871<' not in html


def test_report_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 5
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.IGNORECASE)
    assert "<link" not in html and "@import" not in html and "<script" not in html


def test_report_escapes_html(report):
    html = report.read_text(encoding="utf-8")
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;raw&lt;/i&gt;" in html


def test_report_with_only_results(tmp_path, results):
    index = build_report(
        tmp_path / "r", results=results.drop(columns="fit_seconds"), title="Only <results>"
    )
    html = index.read_text(encoding="utf-8")
    assert "<title>Only &lt;results&gt;</title>" in html
    assert html.count("data:image/png;base64,") == 1
    assert 'id="funnel"' not in html and 'id="explanations"' not in html
    assert {p.name for p in index.parent.glob("*.png")} == {"model_comparison.png"}


def test_training_time_falls_back_to_results_column(tmp_path, results):
    index = build_report(tmp_path / "r", results=results)
    assert (index.parent / "training_time.png").is_file()


def test_bad_explanations_raise(tmp_path):
    with pytest.raises(ValueError, match="items"):
        build_report(tmp_path / "r", explanations=[{"visitor_id": 1}])


def test_explanation_card_from_explanations():
    from funnelrec.models.explainable.explainer import Explanation, Reason, ReasonType

    exp = Explanation(
        item_id=5,
        score=0.7,
        model_name="ALS",
        confidence=0.6,
        funnel_stage="considerer",
        visitor_id=9,
        reasons=[Reason(ReasonType.INTENT, "You added item 4 to your cart.", 0.9)],
    )
    card = explanation_card([exp])
    assert (
        card["visitor_id"] == 9 and card["funnel_stage"] == "considerer" and card["model"] == "ALS"
    )
    assert card["items"][0]["summary"] == "You added item 4 to your cart."


def test_template_ships_with_the_package():
    template = resources.files("funnelrec.reporting").joinpath("templates", "report.html.j2")
    assert template.is_file()


# --------------------------------------------------------------------------- labels and legibility
def test_report_headers_are_readable_labels_with_the_cutoff_they_were_computed_at(tmp_path, results):
    html = build_report(tmp_path / "r", results=results.assign(n_items=20)).read_text(encoding="utf-8")
    headers = [h.strip() for h in re.findall(r"<th(?:\s[^>]*)?>([^<&]*)", html)]
    assert headers == ["Model", "P@10", "R@10", "nDCG@10", "HR@20", "MRR@20", "Coverage@20", "Fit time"]
    assert not [h for h in headers if "_" in h or h in ("hit_rate", "mrr", "ndcg@10")]
    assert "top-10 recommendations" not in html  # hit rate and MRR are at 20, so no such heading
    assert "HR: hit rate" in html and "@k: computed on the top k items" in html  # the legend


def test_metric_labels():
    from funnelrec.reporting.labels import metric_label

    assert metric_label("precision@10") == "P@10"
    assert metric_label("hit_rate", 20) == "HR@20" and metric_label("mrr", 5) == "MRR@5"
    assert metric_label("hit_rate@10", 20) == "HR@10"  # its own cutoff wins
    assert metric_label("recall@20", 10) == "R@20" and metric_label("fit_seconds", 20) == "Fit time"
    assert metric_label("n_events_unknown_target") == "n events unknown target"


def test_a_new_visitors_card_says_so_with_their_session(tmp_path, explanations):
    card = {**explanations[1], "visitor_id": None, "funnel_stage": "new", "session_item_ids": [10, 12]}
    html = build_report(tmp_path / "r", explanations=[card]).read_text(encoding="utf-8")
    assert "New visitor (no history)" in html and "viewing items 10, 12" in html
    assert "Visitor ?" not in html and "Visitor None" not in html


#: The widest a picture is shown in the report: the page's 1,160 px column less the paddings of
#: the page (2 x 24 px) and of a section (2 x 24 px) and its borders.
REPORT_PICTURE_PX = 1_062
#: Smallest text, in pixels as shown, that stays readable next to the page's 13-15 px text.
MIN_SHOWN_TEXT_PX = 11.0


def _smallest_shown_text_px(figure) -> float:
    from matplotlib.text import Text

    figure.canvas.draw()  # lays out constrained figures and their labels
    drawn_px = figure.get_figwidth() * figure.dpi
    scale = min(1.0, REPORT_PICTURE_PX / drawn_px)
    sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * figure.dpi / 72 * scale


@pytest.mark.parametrize("n_models", [3, 8, 12])
def test_chart_text_stays_readable_at_the_size_the_report_shows_it(n_models):
    names = ["FunnelAwareHybrid", "SASRec", "ALS", "TwoTower", "GRU4Rec", "Item2Vec", "SessionKNN",
             "Popular", "A", "B", "C", "D"][:n_models]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"model": names, "n_items": 20, **{
        column: rng.random(n_models) * 0.3
        for column in ("precision@10", "recall@10", "ndcg@10", "recall@20", "mrr@20")
    }})
    funnel_events = to_canonical(pd.DataFrame({
        "visitor_id": [1, 1, 2, 3], "event": ["view", "addtocart", "view", "transaction"],
        "item_id": [1, 1, 2, 1], "transaction_id": [None, None, None, 7],
        "timestamp": 1_430_000_000_000 + np.arange(4) * 60_000,
    }))
    figures = {
        "comparison": charts.model_comparison_figure(frame),
        "session": charts.session_comparison_figure(frame),
        "funnel": charts.funnel_figure(funnel_events),
        "training": charts.training_time_figure(dict(zip(names, rng.random(n_models) * 100, strict=True))),
    }
    for name, figure in figures.items():
        assert _smallest_shown_text_px(figure) >= MIN_SHOWN_TEXT_PX, name


def test_chart_legends_use_the_shared_labels(results):
    figure = charts.model_comparison_figure(results)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["P@10", "R@10", "nDCG@10"]


def test_the_tsne_step_logs_what_it_does_and_how_long_it_took(tmp_path):
    from loguru import logger

    from funnelrec.reporting.embeddings import plot_item_embeddings

    lines: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        rng = np.random.default_rng(1)
        plot_item_embeddings(rng.random((40, 8)), np.arange(40), rng.integers(0, 3, 40), tmp_path / "t.png")
    finally:
        logger.remove(sink)
        logger.disable("funnelrec")
    text = "".join(lines)
    assert "t-SNE of 40 of 40 item vectors (8-d)" in text and "t-SNE done in" in text


@pytest.mark.parametrize("shown", [True, False])
def test_the_report_shows_a_progress_bar_unless_bars_are_off(tmp_path, capsys, monkeypatch, results, shown):
    from funnelrec.config import settings

    monkeypatch.setattr(settings, "progress_bars", shown)
    build_report(tmp_path / "r", results=results)
    assert ("report:" in capsys.readouterr().err) is shown


def test_a_card_does_not_repeat_the_reason_its_summary_ends_with(tmp_path):
    # summaries read "Ranked by <model>. <leading reason>": the reason must not show twice
    lead, other = "You added item 4 to your cart.", "Item 5 is in the category you viewed most."
    card = {"visitor_id": 9, "funnel_stage": "considerer", "model": "ALS", "items": [{
        "item_id": 5, "score": 0.7, "confidence": 0.6,
        "summary": f"Ranked by ALS (collaborative filtering). {lead}", "reasons": [lead, other]}]}
    html = build_report(tmp_path / "r", explanations=[card]).read_text(encoding="utf-8")
    assert html.count(lead) == 1 and html.count(other) == 1
