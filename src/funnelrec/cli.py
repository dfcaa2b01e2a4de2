"""`funnelrec` command line: thin commands over the library.

Exit codes: 0 success, 1 a failure while running, 2 bad usage or bad input (typer's own).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

import funnelrec
from funnelrec.config import settings

app = typer.Typer(
    name="funnelrec",
    help="Funnel-aware e-commerce recommendations: data, models, evaluation, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads of torch, BLAS, FAISS and ALS (default: FUNNELREC_THREADS, else the "
                    "cores this process may use).")] = None,
) -> None:
    """Set log verbosity and thread counts for every command."""
    from funnelrec.threads import configure_threads

    funnelrec.enable_logging("DEBUG" if verbose else "WARNING" if quiet else "INFO")
    configure_threads(threads)  # before any command imports torch: one thread count for all


def _fail(message: str, code: int = EXIT_FAILURE) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, lists, bools)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(f"--param must look like key=value, got {pair!r}", EXIT_BAD_INPUT)
        key, value = pair.split("=", 1)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


_SHORT = {"precision": "P", "recall": "R", "ndcg": "nDCG", "hit_rate": "HR", "mrr": "MRR",
          "coverage": "cov", "fit_seconds": "fit s"}


def _short(column: str) -> str:
    base, _, k = column.partition("@")
    return _SHORT.get(base, base) + (f"@{k}" if k else "")


def metrics_table(frame, columns: list[str], title: str) -> Table:
    """A rich table of selected metric columns, best value per column in bold."""
    # light borders: eight models x eight metrics fit an 80-column terminal without truncation
    table = Table(title=title, header_style="bold cyan", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    table.add_column("model", no_wrap=True)
    present = [c for c in columns if c in frame.columns]
    for column in present:
        table.add_column(_short(column), justify="right", no_wrap=True)
    best = {c: frame[c].max() for c in present}
    for _, row in frame.iterrows():  # a handful of models, not events
        cells = []
        for c in present:
            value = row[c]
            text = f"{value:.4f}" if isinstance(value, float) and c != "fit_seconds" else f"{value:.1f}"
            cells.append(f"[bold]{text}[/]" if value == best[c] and c != "fit_seconds" else text)
        table.add_row(str(row["model"]), *cells)
    return table


# ------------------------------------------------------------------------------- data
@app.command()
def generate(
    scale: Annotated[str, typer.Option(help="tiny | demo | full")] = "demo",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <data_dir>/raw).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Write synthetic RetailRocket-format files (events, item properties, category tree)."""
    from funnelrec.data.synthetic import SCALES, describe, format_description, generate, write

    if scale not in SCALES:
        _fail(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}", EXIT_BAD_INPUT)
    out = out or settings.raw_dir
    started = time.perf_counter()
    data = generate(scale, seed=seed)
    paths = write(data, out)
    console.print(format_description(describe(data.events)))
    console.print(f"[green]Wrote[/] {', '.join(p.name for p in paths.values())} to {out} "
                  f"in {time.perf_counter() - started:.1f}s")


@app.command(name="describe")
def describe_cmd(
    data_dir: Annotated[Path | None, typer.Option(help="Folder of RetailRocket files.")] = None,
) -> None:
    """Print the statistics of an events file (real or synthetic)."""
    from funnelrec.data.loaders.retailrocket import RetailRocketLoader
    from funnelrec.data.synthetic import describe, format_description

    try:
        events = RetailRocketLoader(data_dir).load_events()
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    console.print(format_description(describe(events)))


# ------------------------------------------------------------------------------- demo
@app.command()
def demo(
    scale: Annotated[str | None, typer.Option(help="Synthetic scale if data must be generated.")] = None,
    max_users: Annotated[int, typer.Option(help="Visitors sampled by evaluate().")] = 2000,
    models: Annotated[str | None, typer.Option(help="Comma-separated model keys (default: all).")] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report.")] = True,
) -> None:
    """Generate (if needed), load, sessionise, split, train every model, evaluate, explain, report."""
    from funnelrec.data.features.user_features import UserFeatureExtractor
    from funnelrec.data.synthetic import format_description
    from funnelrec.models.base import REGISTRY, get_model_class
    from funnelrec.models.explainable.explainer import RecommendationExplainer
    from funnelrec.pipeline import (
        DEMO_MODELS,
        ensure_data,
        fit_and_evaluate,
        prepare_data,
        sample_explanations,
    )

    started = time.perf_counter()
    run = datetime.now().strftime("%Y%m%d-%H%M%S")
    get_model_class("popular")  # registers every built-in model
    specs = {k: v for k, v in DEMO_MODELS.items() if k in REGISTRY}
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in specs]
        if unknown:
            _fail(f"unknown model(s) {unknown}; available: {list(specs)}", EXIT_BAD_INPUT)
        specs = {m: specs[m] for m in wanted}
    ensure_data(scale=scale)
    data = prepare_data()
    console.rule("[bold]Data")
    console.print(format_description(data.description))
    console.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} events")
    artifacts = settings.artifacts_dir / run
    console.rule("[bold]Models")
    outcome = fit_and_evaluate(data, specs, max_users=max_users, artifacts_dir=artifacts)
    settings.processed_dir.mkdir(parents=True, exist_ok=True)
    results_path = settings.processed_dir / "demo_results.csv"
    sessions_path = settings.processed_dir / "demo_session_results.csv"
    outcome.results.to_csv(results_path, index=False)
    outcome.session_results.to_csv(sessions_path, index=False)
    console.print(metrics_table(
        outcome.results.sort_values("ndcg@10", ascending=False),
        ["precision@10", "recall@10", "ndcg@10", "hit_rate", "mrr", "coverage", "fit_seconds"],
        f"Visitor holdout (evaluate, {int(outcome.results['n_users'].max())} visitors, seen items excluded)",
    ))
    console.print(metrics_table(
        outcome.session_results.sort_values("mrr@20", ascending=False),
        ["recall@5", "recall@20", "mrr@5", "mrr@20", "coverage"],
        f"Next item in session (evaluate_sessions, {int(outcome.session_results['n_events'].max()):,} events)",
    ))

    console.rule("[bold]Explanations")
    features = UserFeatureExtractor().fit(data.train)
    explainer = RecommendationExplainer(features, data.train["item_id"].value_counts().to_dict()).fit(data.train)
    explainer.save(artifacts / "explainer")
    explained_model = outcome.models.get("funnel_hybrid") or next(iter(outcome.models.values()))
    samples = sample_explanations(data, explained_model, explainer, n_items=3)
    for sample in samples:
        who = f"visitor {sample['visitor_id']}" if sample["visitor_id"] is not None else \
            f"a new visitor viewing {sample['session_item_ids']}"
        console.print(f"[bold]{who}[/] ({sample['funnel_stage']}), {sample['model']}:")
        for item in sample["items"]:
            console.print(f"  item {item['item_id']}  [dim]confidence {item['confidence']:.2f}[/]  {item['summary']}")

    if report:
        report_path = _write_report(data, outcome, samples, settings.reports_dir / run, run)
        console.print(f"Report: {report_path}")
    console.print(f"Results: {results_path}, {sessions_path}; models: {artifacts}")
    console.print(f"[bold green]Done[/] in {time.perf_counter() - started:.1f}s")


def _write_report(data, outcome, samples, out_dir: Path, run: str) -> Path:
    from funnelrec.reporting.html_report import build_report

    embedding_png = None
    two_tower = outcome.models.get("two_tower")
    if two_tower is not None and data.category_tree is not None:
        from funnelrec.reporting.embeddings import plot_model_embeddings

        out_dir.mkdir(parents=True, exist_ok=True)
        embedding_png = plot_model_embeddings(two_tower, data.category_tree, out_dir / "item_embeddings.png")
    return build_report(
        out_dir, results=outcome.results, session_results=outcome.session_results,
        fit_seconds=outcome.fit_seconds, events=data.events, explanations=samples,
        embedding_png=embedding_png, run_info={"run": run, "funnelrec": funnelrec.__version__},
    )


# ------------------------------------------------------------------------------- models
@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model key, e.g. als, item2vec, session_knn.")],
    out: Annotated[Path | None, typer.Option(help="Artifact folder (default: <artifacts_dir>/<model>).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Hyperparameter key=value.")] = None,
) -> None:
    """Train one model on the train split of the data and save it."""
    from funnelrec.models.base import get_model_class
    from funnelrec.pipeline import build_model, ensure_data, fit_model, prepare_data

    try:
        get_model_class(model)
    except KeyError as exc:
        _fail(str(exc.args[0]), EXIT_BAD_INPUT)
    try:  # the hybrid gets the demo's component models, fitted along with it
        instance = build_model(model, **_parse_params(param or []))
    except (TypeError, ValueError) as exc:
        _fail(f"bad hyperparameters for {model}: {exc}", EXIT_BAD_INPUT)
    ensure_data()
    data = prepare_data()
    fit_model(instance, data)
    path = instance.save(out or settings.artifacts_dir / model)
    console.print(f"[green]Saved[/] {instance.name} to {path}")


def _is_model_dir(path: Path) -> bool:
    """A folder saved by Recommender.save (an explainer or other artifact is not a model)."""
    from funnelrec.models.base import REGISTRY, get_model_class

    get_model_class("popular")  # registers the built-in models
    try:
        return json.loads((path / "config.json").read_text()).get("model") in REGISTRY
    except (OSError, json.JSONDecodeError, AttributeError):
        return (path / "config.json").exists()  # let load() report the corruption


def _load_models(artifacts: Path) -> dict[str, Any]:
    """The saved models of a model folder or a run folder (hidden and leftover folders of
    interrupted saves are not models); a missing, damaged or tampered one exits 2."""
    from funnelrec.models.base import ArtifactError, Recommender, find_model_dirs

    try:
        folders = find_model_dirs(artifacts)
        if not folders:
            _fail(f"no saved models in {artifacts}", EXIT_BAD_INPUT)
        return {name: Recommender.load(folder) for name, folder in folders.items()}
    except ArtifactError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    raise AssertionError("unreachable")


@app.command()
def evaluate(
    artifacts: Annotated[Path, typer.Option(help="A saved model folder, or a folder of them.")],
    max_users: Annotated[int, typer.Option(help="Visitors sampled by evaluate().")] = 2000,
) -> None:
    """Evaluate saved models on the test split with both protocols."""
    import pandas as pd

    from funnelrec.evaluation.evaluator import Evaluator
    from funnelrec.pipeline import prepare_data

    models = _load_models(artifacts)
    data = prepare_data()
    evaluator = Evaluator(k_values=[5, 10, 20])
    rows, session_rows = [], []
    for model in models.values():
        rows.append(dict(evaluator.evaluate(model, data.train, data.test, n_items=20, max_users=max_users)))
        session_rows.append(dict(evaluator.evaluate_sessions(model, data.test, cutoff=20, max_events=20_000)))
    console.print(metrics_table(pd.DataFrame(rows), ["precision@10", "recall@10", "ndcg@10", "hit_rate", "mrr"],
                                "Visitor holdout"))
    console.print(metrics_table(pd.DataFrame(session_rows), ["recall@20", "mrr@20"], "Next item in session"))


@app.command()
def recommend(
    model: Annotated[Path, typer.Option(help="A saved model folder.")],
    visitor: Annotated[int | None, typer.Option(help="Visitor id.")] = None,
    items: Annotated[str | None, typer.Option(help="Live session item ids, comma-separated.")] = None,
    n: Annotated[int, typer.Option("-n", help="How many recommendations.")] = 10,
) -> None:
    """Recommend for a visitor (``--visitor``) or a live session (``--items``)."""
    loaded = next(iter(_load_models(model).values()))
    if (visitor is None) == (items is None):
        _fail("give exactly one of --visitor or --items", EXIT_BAD_INPUT)
    try:
        if visitor is not None:
            recs = loaded.recommend(visitor, n_items=n)
        else:
            ids = [int(x) for x in items.split(",") if x.strip()]
            recs = loaded.recommend_by_item_ids(ids, n_items=n)
    except ValueError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    table = Table(title=f"{loaded.name}: {'visitor ' + str(visitor) if visitor is not None else 'session'}"
                  + (" (cold start: popular items)" if recs.is_fallback else ""))
    table.add_column("rank", justify="right")
    table.add_column("item_id", justify="right")
    table.add_column("score", justify="right")
    for rank, (item_id, score) in enumerate(recs, 1):
        table.add_row(str(rank), str(item_id), f"{score:.4f}")
    console.print(table)


# ------------------------------------------------------------------------------- serving
class _ArtifactStartupFilter(logging.Filter):
    """Drops the traceback uvicorn logs when start-up failed on a damaged artifact: that error is
    printed once, plainly, with exit code 2 (any other start-up failure keeps its traceback)."""

    def __init__(self, web) -> None:
        super().__init__()
        self.web = web

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.web.state.startup_error and record.getMessage().startswith("Traceback"))


@app.command()
def serve(
    artifacts: Annotated[Path, typer.Option(help="Folder of saved models (one subfolder each) "
                                                 "and an optional explainer/ folder.")],
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    timeout_keep_alive: Annotated[int, typer.Option(
        min=1, help="Seconds an idle keep-alive connection stays open.")] = 5,
    body_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request body (408 and closed past it).")] = 10.0,
) -> None:
    """Serve the saved models over HTTP (FastAPI; docs at /docs). API key: FUNNELREC_API_KEY."""
    import uvicorn

    from funnelrec.models.base import ArtifactError
    from funnelrec.serving.app import create_app, find_model_dirs

    try:
        found = find_model_dirs(artifacts)
    except ArtifactError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if not found:
        _fail(f"no saved models in {artifacts}: expected subfolders with config.json "
              "(run `funnelrec demo` or `funnelrec train`)", EXIT_BAD_INPUT)
    web = create_app(artifacts, body_timeout_s=body_timeout)
    console.print(f"Serving {', '.join(found)} on http://{host}:{port} (docs at /docs)")
    server = uvicorn.Server(uvicorn.Config(
        web, host=host, port=port, log_level="info", timeout_keep_alive=timeout_keep_alive))
    quiet = _ArtifactStartupFilter(web)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        server.run()
    except SystemExit:  # uvicorn exits with its own code 3 when the lifespan start-up fails
        if server.started:
            raise
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    if not server.started:
        if web.state.startup_error:
            _fail(web.state.startup_error, EXIT_BAD_INPUT)
        _fail(f"the server did not start on {host}:{port} (see the log above)")


if __name__ == "__main__":  # pragma: no cover
    app()
