"""`funnelrec` command line: thin commands over the library.

Exit codes: 0 success, 1 a failure while running, 2 bad usage or bad input (typer's own).
"""

from __future__ import annotations

import json
import logging
import time
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
console = Console(soft_wrap=True)  # long paths and commands stay whole, to copy and paste

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


_log_level = "INFO"  # set by the callback; `serve` hands it to uvicorn's own loggers


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

    global _log_level
    _log_level = "DEBUG" if verbose else "WARNING" if quiet else "INFO"
    funnelrec.enable_logging(_log_level)
    settings.progress_bars = not quiet  # every tqdm bar goes through funnelrec.progress
    configure_threads(threads)  # before any command imports torch: one thread count for all


def _fail(message: str, code: int = EXIT_FAILURE) -> None:
    from rich.markup import escape

    # escaped: messages quote data ("[visitorid='abc']"), which rich would take for markup
    console.print(f"[bold red]error:[/] {escape(message)}")
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


# ------------------------------------------------------------------------------- loader options
EventsFileOption = Annotated[Path | None, typer.Option(
    help="Your own events CSV (any name), instead of events.csv in the data folder; property and "
         "category files are looked up beside it.")]
ColumnsOption = Annotated[str | None, typer.Option(
    help="The events file's column for each role, where not RetailRocket's: role=name,... with roles "
         "timestamp, visitor, event, item, transaction; e.g. visitor=user_id,item=sku,timestamp=ts.")]
StringIdsOption = Annotated[str | None, typer.Option(
    help="Roles whose ids are text (visitor, item, transaction; comma-separated): encoded to codes "
         "0..n-1 in sorted order, the ids kept in the run's id_maps.json.")]
TimestampUnitOption = Annotated[str | None, typer.Option(
    help="Unit of integer timestamps: s | ms | us | ns | auto (default: detect per file).")]
MaxDroppedShareOption = Annotated[float | None, typer.Option(
    help="Share of a file's rows that may be dropped as unreadable before loading fails "
         "(default 0.1; 1 keeps whatever is readable).")]


def _parse_columns(text: str) -> dict[str, str]:
    """``"visitor=user_id,item=sku"`` -> ``{"visitor": "user_id", "item": "sku"}``; exits 2 otherwise."""
    from funnelrec.data.schema import COLUMN_ROLES

    columns: dict[str, str] = {}
    for pair in text.split(","):
        role, sep, name = (part.strip() for part in pair.partition("="))
        if not sep or not role or not name:
            _fail(f"--columns {text!r}: {pair.strip()!r} must look like role=column "
                  f"(roles: {', '.join(COLUMN_ROLES)})", EXIT_BAD_INPUT)
        if role not in COLUMN_ROLES:
            _fail(f"--columns {text!r}: unknown role {role!r}; the roles are {', '.join(COLUMN_ROLES)}",
                  EXIT_BAD_INPUT)
        columns[role] = name
    return columns


def _loader_options(columns: str | None = None, string_ids: str | None = None,
                    timestamp_unit: str | None = None, max_dropped_share: float | None = None) -> dict[str, Any]:
    """RetailRocketLoader's keyword arguments from the command-line options that were given."""
    options: dict[str, Any] = {}
    if columns is not None:
        options["columns"] = _parse_columns(columns)
    if string_ids is not None:
        options["string_ids"] = [role.strip() for role in string_ids.split(",") if role.strip()]
    if timestamp_unit is not None:
        options["timestamp_unit"] = timestamp_unit
    if max_dropped_share is not None:
        options["max_dropped_share"] = max_dropped_share
    return options


def _prepare_data(raw_dir: Path | None, loader_options: dict[str, Any]):
    """:func:`funnelrec.pipeline.prepare_data`; a missing or unusable file exits 2 saying why."""
    from funnelrec.pipeline import prepare_data

    try:  # DataError (a bad file, column or value) is a ValueError, as a split's complaints are
        return prepare_data(raw_dir, loader_options=loader_options)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)


def _parse_item_ids(text: str, option: str = "--items", text_ids=None) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; an empty or non-integer id exits 2 naming it. With
    ``text_ids`` (the run's item map) the ids are the shop's text ids, read as codes (:func:`_text_codes`)."""
    ids = []
    parts = [part.strip() for part in text.split(",")]
    for position, part in enumerate(parts, 1):
        if not part:
            example = ",".join(text_ids[:2]) if text_ids is not None else "1,2,3"
            _fail(f"{option} {text!r}: id {position} is empty; give item ids like {example}", EXIT_BAD_INPUT)
        if text_ids is not None:
            continue
        try:
            ids.append(int(part))
        except ValueError:
            _fail(f"{option} {text!r}: {part!r} is not an item id (ids are integers, like 1,2,3)",
                  EXIT_BAD_INPUT)
    return _text_codes(parts, text_ids, "item", option) if text_ids is not None else ids


def _parse_visitor_id(text: str, text_ids=None) -> int:
    """``--visitor``'s id: an integer, or with ``text_ids`` (the run's visitor map) the shop's text
    id, read as its code (:func:`_text_codes`); empty or not an integer exits 2 naming it."""
    text = text.strip()
    if not text:
        _fail("--visitor is empty; give a visitor id", EXIT_BAD_INPUT)
    if text_ids is not None:
        return _text_codes([text], text_ids, "visitor", "--visitor")[0]
    try:
        return int(text)
    except ValueError:
        _fail(f"--visitor {text!r} is not a visitor id (ids are integers, like 123)", EXIT_BAD_INPUT)
    raise AssertionError("unreachable")


def _run_id_maps(selection) -> dict[str, Any]:
    """The run's text-id maps (its id_maps.json, written for ``--string-ids``): role -> the shop's
    ids, code = position; empty for a run of integer ids. A damaged file exits 2."""
    from funnelrec.data.loaders.retailrocket import ID_MAPS_FILE, DataError, load_id_maps

    if selection.run_dir is None or not (selection.run_dir / ID_MAPS_FILE).is_file():
        return {}
    try:
        return load_id_maps(selection.run_dir)
    except DataError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    raise AssertionError("unreachable")


def _text_codes(texts: list[str], text_ids, what: str, option: str) -> list[int]:
    """The codes of the shop's text ids. One the run never saw gets -1, a code no model knows, so
    it is what an unknown integer id is (an item ignored, a visitor without history), said so."""
    from rich.markup import escape

    codes = text_ids.get_indexer(texts).tolist()
    unknown = [text for text, code in zip(texts, codes, strict=True) if code < 0]
    if unknown:
        several = len(unknown) > 1
        console.print(f"[yellow]note:[/] {option}: {escape(', '.join(map(repr, unknown)))} {'are' if several else 'is'} "
                      f"not among the run's {what} ids (id_maps.json); treated as unknown {what}{'s' * several}")
    return codes


def _shop_item_ids(codes: list[int], text_ids) -> list[str]:
    """The shop's text ids of item codes; a code outside the map (an id_maps.json that is not this
    model's) exits 2."""
    outside = [code for code in codes if not 0 <= code < len(text_ids)]
    if outside:
        _fail(f"item code(s) {outside[:5]} are outside the run's id_maps.json ({len(text_ids)} items): "
              "the file is not this model's", EXIT_BAD_INPUT)
    return text_ids[codes].tolist()


def _select(path: Path):
    """:func:`funnelrec.runs.select_models`, saying what it chose; nothing to load exits 2."""
    from funnelrec.errors import ArtifactError
    from funnelrec.runs import select_models

    try:
        selection = select_models(path)
    except ArtifactError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    if selection.note:
        console.print(f"[yellow]note:[/] {selection.note}")
    return selection


def _run_data(selection, loader_options: dict[str, Any] | None = None, events_file: Path | None = None):
    """The data a run was trained on (``run.json``'s ``raw_dir``, a folder or an events file, read
    with its ``loader`` options), split as it was; else ``data/raw``. ``events_file`` and
    ``loader_options`` given on the command line replace the recorded ones."""
    recorded = events_file or selection.run_info.get("raw_dir")
    raw_dir = Path(recorded) if recorded else None
    if raw_dir is not None and not raw_dir.exists():
        console.print(f"[yellow]note:[/] run {selection.run_name} was trained on {raw_dir}, which is gone; "
                      f"using {settings.raw_dir}")
        raw_dir = None
    return _prepare_data(raw_dir, {**(selection.run_info.get("loader") or {}), **(loader_options or {})})


#: The columns of the result tables the CLI prints (the report shows more).
VISITOR_TABLE_COLUMNS = ["precision@10", "recall@10", "ndcg@10", "hit_rate", "mrr", "coverage", "fit_seconds"]
SESSION_TABLE_COLUMNS = ["recall@5", "recall@20", "mrr@5", "mrr@20", "coverage"]


def _print_results(results, session_results) -> None:
    console.print(metrics_table(
        results.sort_values("ndcg@10", ascending=False), VISITOR_TABLE_COLUMNS,
        f"Visitor holdout (evaluate, {int(results['n_users'].max())} visitors, seen items excluded)",
    ))
    console.print(metrics_table(
        session_results.sort_values("mrr@20", ascending=False), SESSION_TABLE_COLUMNS,
        f"Next item in session (evaluate_sessions, {int(session_results['n_events'].max()):,} events)",
    ))


def _write_results(results, session_results, out_dir: Path) -> tuple[Path, Path]:
    """The run's tables beside its report: ``results.csv`` and ``session_results.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path, sessions_path = out_dir / "results.csv", out_dir / "session_results.csv"
    results.to_csv(results_path, index=False)
    session_results.to_csv(sessions_path, index=False)
    return results_path, sessions_path


def metrics_table(frame, columns: list[str], title: str) -> Table:
    """A rich table of selected metric columns, best value per column in bold (labels as the report's)."""
    from funnelrec.reporting.labels import list_length, metric_label

    # light borders, one space between columns: eight models x eight readable labels fit an
    # 80-column terminal without truncation
    table = Table(title=title, header_style="bold cyan", box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    table.add_column("Model", no_wrap=True)
    present = [c for c in columns if c in frame.columns]
    cutoff = list_length(frame)
    for column in present:
        table.add_column(metric_label(column, cutoff), justify="right", no_wrap=True)
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
    data_dir: Annotated[Path | None, typer.Option(
        help="Folder of RetailRocket files, or an events file (default: <data_dir>/raw).")] = None,
    events_file: EventsFileOption = None,
    columns: ColumnsOption = None,
    string_ids: StringIdsOption = None,
    timestamp_unit: TimestampUnitOption = None,
    max_dropped_share: MaxDroppedShareOption = None,
) -> None:
    """Print the statistics of an events file (real, synthetic or your own)."""
    from funnelrec.data.loaders.retailrocket import RetailRocketLoader
    from funnelrec.data.synthetic import describe, format_description

    if data_dir is not None and events_file is not None:
        _fail("give --data-dir or --events-file, not both", EXIT_BAD_INPUT)
    options = _loader_options(columns, string_ids, timestamp_unit, max_dropped_share)
    try:
        loader = RetailRocketLoader(events_file or data_dir, **options)
        events = loader.load_events()
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    console.print(format_description(describe(events)))
    if loader.report.n_dropped:
        n_dropped = loader.report.n_dropped
        console.print(f"[yellow]note:[/] {n_dropped:,} dropped row{'s' * (n_dropped != 1)}: "
                      + ", ".join(f"{reason} {n:,}" for reason, n in loader.report.counts().items()))


# ------------------------------------------------------------------------------- demo
@app.command()
def demo(
    scale: Annotated[str | None, typer.Option(
        help="Run on synthetic data of this scale (tiny | demo | full), generated once into "
             "<data_dir>/synthetic/<scale>; data/raw is left alone. Default: data/raw, generated "
             "at FUNNELREC_DEMO_SCALE when it has no events.csv.")] = None,
    max_users: Annotated[int, typer.Option(help="Visitors sampled by evaluate().")] = 2000,
    models: Annotated[str | None, typer.Option(help="Comma-separated model keys (default: all).")] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report.")] = True,
    events_file: EventsFileOption = None,
    columns: ColumnsOption = None,
    string_ids: StringIdsOption = None,
    timestamp_unit: TimestampUnitOption = None,
    max_dropped_share: MaxDroppedShareOption = None,
) -> None:
    """Generate (if needed), load, sessionise, split, train every model, evaluate, explain, report.

    Models go to <artifacts_dir>/<run>/, the report and the results tables (results.csv,
    session_results.csv) to <reports_dir>/<run>/; <run> is the start time.
    """
    from funnelrec.data.loaders.retailrocket import save_id_maps
    from funnelrec.data.synthetic import SCALES, format_description
    from funnelrec.models.base import REGISTRY, get_model_class
    from funnelrec.pipeline import (
        DEMO_MODELS,
        ensure_data,
        fit_and_evaluate,
        fit_explainer,
        sample_explanations,
        synthetic_dir,
    )
    from funnelrec.runs import EXPLAINER_DIR, new_run_dir, write_run_info
    from funnelrec.serving.app import default_model_key

    started = time.perf_counter()
    if scale is not None and scale not in SCALES:
        _fail(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}", EXIT_BAD_INPUT)
    get_model_class("popular")  # registers every built-in model
    specs = {k: v for k, v in DEMO_MODELS.items() if k in REGISTRY}
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in specs]
        if unknown:
            _fail(f"unknown model(s) {unknown}; available: {list(specs)}", EXIT_BAD_INPUT)
        specs = {m: specs[m] for m in wanted}
    if scale and events_file:
        _fail("give --scale (synthetic data) or --events-file (your own), not both", EXIT_BAD_INPUT)
    loader_options = _loader_options(columns, string_ids, timestamp_unit, max_dropped_share)
    # an explicit --scale gets data of that scale in its own folder: never silently the data in
    # data/raw (which may be another scale, or real data), never overwriting it
    if events_file:
        raw_dir = events_file
    else:
        raw_dir = ensure_data(synthetic_dir(scale), scale=scale) if scale else ensure_data()
    data = _prepare_data(raw_dir, loader_options)
    console.rule("[bold]Data")
    console.print(f"Data: {raw_dir}" + (f" (synthetic, scale {scale!r})" if scale else ""))
    console.print(format_description(data.description))
    console.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} events")
    artifacts = new_run_dir(settings.artifacts_dir)
    run = artifacts.name
    write_run_info(artifacts, command="demo", raw_dir=str(raw_dir.resolve()), scale=scale,
                   random_seed=settings.random_seed, models=list(specs), loader=loader_options)
    save_id_maps(data.id_maps, artifacts)  # text ids (--string-ids): code -> id, for the outputs
    console.rule("[bold]Models")
    outcome = fit_and_evaluate(data, specs, max_users=max_users, artifacts_dir=artifacts)
    write_run_info(artifacts, fit_seconds={key: outcome.fit_seconds[m.name] for key, m in outcome.models.items()})
    results_path, sessions_path = _write_results(outcome.results, outcome.session_results,
                                                 settings.reports_dir / run)
    _print_results(outcome.results, outcome.session_results)

    console.rule("[bold]Explanations")
    explainer = fit_explainer(data)
    explainer.save(artifacts / EXPLAINER_DIR)
    explained = default_model_key({key: m.registry_key for key, m in outcome.models.items()})
    samples = sample_explanations(data, outcome.models[explained], explainer, n_items=3)
    _print_samples(samples)

    if report:
        report_path = _write_report(data, outcome, samples, settings.reports_dir / run, run)
        console.print(f"Report: {report_path}")
    console.print(f"Results: {results_path}, {sessions_path}; models: {artifacts}")
    console.print(f"[bold green]Done[/] in {time.perf_counter() - started:.1f}s")


def _print_samples(samples: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    for sample in samples:
        who = f"visitor {sample['visitor_id']}" if sample["visitor_id"] is not None else \
            f"a new visitor (no history) viewing {sample['session_item_ids']}"
        console.print(f"[bold]{who}[/] ({sample['funnel_stage']}), {sample['model']}:")
        for item in sample["items"]:
            console.print(f"  item {item['item_id']}  [dim]confidence {item['confidence']:.2f}[/]  "
                          f"{escape(item['summary'])}")


def _write_report(data, outcome, samples, out_dir: Path, run: str) -> Path:
    from loguru import logger

    from funnelrec.reporting.html_report import build_report

    two_tower = outcome.models.get("two_tower") if data.category_tree is not None else None
    if two_tower is not None:  # drawn under the report's progress bar, with its own log lines
        logger.info("Report: charts and a t-SNE map of the Two-Tower item embeddings (the slow step)")
    return build_report(
        out_dir, results=outcome.results, session_results=outcome.session_results,
        fit_seconds=outcome.fit_seconds, events=data.events, explanations=samples,
        embedding_model=two_tower, category_tree=data.category_tree if two_tower is not None else None,
        run_info={"run": run, "funnelrec": funnelrec.__version__},
    )


# ------------------------------------------------------------------------------- models
@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model key, e.g. als, item2vec, session_knn.")],
    out: Annotated[Path | None, typer.Option(
        help="Save the model in exactly this folder (default: a new run, <artifacts_dir>/<run>/<model>, "
             "with the explainer).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Hyperparameter key=value.")] = None,
    events_file: EventsFileOption = None,
    columns: ColumnsOption = None,
    string_ids: StringIdsOption = None,
    timestamp_unit: TimestampUnitOption = None,
    max_dropped_share: MaxDroppedShareOption = None,
) -> None:
    """Train one model on the train split of the data and save it in a new run folder.

    The run folder (<artifacts_dir>/<run>/, <run> the start time) holds the model, the explainer
    and run.json, ready for `funnelrec serve`, `evaluate`, `report` and `recommend --explain`.
    """
    from funnelrec.data.loaders.retailrocket import save_id_maps
    from funnelrec.models.base import get_model_class
    from funnelrec.pipeline import build_model, ensure_data, fit_explainer, fit_model
    from funnelrec.runs import EXPLAINER_DIR, new_run_dir, write_run_info

    try:
        get_model_class(model)
    except KeyError as exc:
        _fail(str(exc.args[0]), EXIT_BAD_INPUT)
    try:  # the hybrid gets the demo's component models, fitted along with it
        instance = build_model(model, **_parse_params(param or []))
    except (TypeError, ValueError) as exc:
        _fail(f"bad hyperparameters for {model}: {exc}", EXIT_BAD_INPUT)
    loader_options = _loader_options(columns, string_ids, timestamp_unit, max_dropped_share)
    raw_dir = events_file or ensure_data()
    data = _prepare_data(raw_dir, loader_options)
    started = time.perf_counter()
    fit_model(instance, data)
    fit_seconds = time.perf_counter() - started
    if out is not None:
        path = instance.save(out)
        console.print(f"[green]Saved[/] {instance.name} to {path}")
        if data.id_maps:
            console.print(f"[yellow]note:[/] the model knows the text ids ({', '.join(data.id_maps)}) by "
                          "codes; only a run folder (without --out) keeps their id_maps.json")
        return
    run_dir = new_run_dir(settings.artifacts_dir)
    path = instance.save(run_dir / model)
    fit_explainer(data).save(run_dir / EXPLAINER_DIR)
    write_run_info(run_dir, command="train", raw_dir=str(Path(raw_dir).resolve()),
                   random_seed=settings.random_seed, models=[model], fit_seconds={model: fit_seconds},
                   loader=loader_options)
    save_id_maps(data.id_maps, run_dir)  # text ids (--string-ids): code -> id, for the outputs
    console.print(f"[green]Saved[/] {instance.name} to {path}, in the new run {run_dir.name} with its explainer "
                  f"(serve it with: funnelrec serve --artifacts {run_dir})")


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


_ARTIFACTS_HELP = ("A run folder (<artifacts_dir>/<run>), one model folder in it, or a folder of runs "
                   "(the newest is used, and said so).")


def _evaluate_run(selection, max_users: int, loader_options: dict[str, Any] | None = None,
                  events_file: Path | None = None):
    """Load a selection's models and evaluate them on the test split of the run's data."""
    from funnelrec.pipeline import evaluate_models

    models = _load_models(selection.root)
    data = _run_data(selection, loader_options, events_file)
    console.print(f"Evaluating {', '.join(models)} from {selection.root} on {len(data.test):,} test events")
    results, session_results = evaluate_models(models, data, max_users=max_users,
                                               fit_seconds=selection.run_info.get("fit_seconds"))
    return models, data, results, session_results


@app.command()
def evaluate(
    artifacts: Annotated[Path, typer.Option(help=_ARTIFACTS_HELP)],
    max_users: Annotated[int, typer.Option(help="Visitors sampled by evaluate().")] = 2000,
    events_file: EventsFileOption = None,
    columns: ColumnsOption = None,
    string_ids: StringIdsOption = None,
    timestamp_unit: TimestampUnitOption = None,
    max_dropped_share: MaxDroppedShareOption = None,
) -> None:
    """Evaluate saved models on the test split of the data they were trained on, with both protocols.

    The data and its loader options are the run's (run.json); options given here replace them.
    """
    options = _loader_options(columns, string_ids, timestamp_unit, max_dropped_share)
    _, _, results, session_results = _evaluate_run(_select(artifacts), max_users, options, events_file)
    _print_results(results, session_results)


@app.command()
def report(
    artifacts: Annotated[Path, typer.Option(help=_ARTIFACTS_HELP)],
    max_users: Annotated[int, typer.Option(help="Visitors sampled by evaluate().")] = 2000,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <reports_dir>/<run>).")] = None,
) -> None:
    """Rebuild a run's HTML report and results tables from its saved models.

    The models are evaluated on the test split, as `evaluate` does; explanations come from the
    run's explainer (when saved) for the model `serve` would use by default.
    """
    from funnelrec.models.explainable.explainer import RecommendationExplainer
    from funnelrec.pipeline import DemoResult, sample_explanations
    from funnelrec.serving.app import default_model_key

    selection = _select(artifacts)
    models, data, results, session_results = _evaluate_run(selection, max_users)
    _print_results(results, session_results)
    out_dir = out or settings.reports_dir / selection.run_name
    results_path, sessions_path = _write_results(results, session_results, out_dir)
    samples: list[dict[str, Any]] = []
    if selection.explainer_dir is not None:
        explainer = RecommendationExplainer.load(selection.explainer_dir)
        explained = default_model_key(selection.model_types())
        samples = sample_explanations(data, models[explained], explainer, n_items=3)
    else:
        console.print(f"[yellow]note:[/] no explainer in {selection.root}: the report has no explanations")
    fit_seconds = {models[key].name: float(s) for key, s in (selection.run_info.get("fit_seconds") or {}).items()
                   if key in models}
    outcome = DemoResult(data=data, models=models, results=results, session_results=session_results,
                         fit_seconds=fit_seconds)
    report_path = _write_report(data, outcome, samples, out_dir, selection.run_name)
    console.print(f"Report: {report_path}; results: {results_path}, {sessions_path}")


@app.command()
def recommend(
    model: Annotated[Path, typer.Option(
        help="A saved model folder (<run>/<model>), or a run folder: its default model, as `serve` "
             "picks it (said so).")],
    visitor: Annotated[str | None, typer.Option(
        help="Visitor id (the shop's text id on a run trained with --string-ids visitor).")] = None,
    items: Annotated[str | None, typer.Option(
        help="Live session item ids, comma-separated; with --visitor, that visitor's live session "
             "(the shop's text ids on a run trained with --string-ids item).")] = None,
    n: Annotated[int, typer.Option("-n", help="How many recommendations.")] = 10,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Say why each item is recommended (with the run's saved explainer).")] = False,
    exclude_session_items: Annotated[bool, typer.Option(
        "--exclude-session-items/--include-session-items",
        help="Leave the --items themselves out of the answer (as on a shop page), or let them in.")] = True,
) -> None:
    """Recommend for a visitor (``--visitor``), a live session (``--items``), or both.

    On a run trained with ``--string-ids`` (its id_maps.json) the ids given and printed, in the
    explanations too, are the shop's text ids; the models' codes stay inside.
    """
    from rich.markup import escape

    if visitor is None and items is None:
        _fail("give --visitor, --items or both", EXIT_BAD_INPUT)
    selection = _select(model)
    id_maps = _run_id_maps(selection)
    item_texts, visitor_texts = id_maps.get("item"), id_maps.get("visitor")
    ids = _parse_item_ids(items, text_ids=item_texts) if items is not None else None
    given_visitor, visitor = visitor, _parse_visitor_id(visitor, visitor_texts) if visitor is not None else None
    # printed as given where it is the shop's text id, else as the integer read
    visitor_name = given_visitor.strip() if visitor_texts is not None and given_visitor is not None else str(visitor)
    key = next(iter(selection.model_dirs))
    if len(selection.model_dirs) > 1:
        from funnelrec.serving.app import default_model_key

        key = default_model_key(selection.model_types())
        console.print(f"Using {key}, the default model of {selection.root} (as `serve` picks it); "
                      f"another with --model {selection.root / '<model>'}: {', '.join(selection.model_dirs)}")
    loaded = next(iter(_load_models(selection.model_dirs[key]).values()))
    explainer = _load_explainer(selection) if explain else None
    if explainer is not None and item_texts is not None and explainer.item_names is None:
        # the explainer's own display-name option: its sentences name items by the shop's ids
        explainer.item_names = dict(enumerate(("item " + item_texts).tolist()))
    # as the service answers: a visitor the model knows reads the live session with the history;
    # otherwise the session alone speaks
    known = visitor is not None and bool(loaded.visitor_map_.to_idx([visitor])[0] >= 0)
    try:
        if visitor is not None and (known or not ids):
            recs = loaded.recommend(visitor, n_items=n, session_item_ids=ids,
                                    exclude_session_items=exclude_session_items)
        else:
            recs = loaded.recommend_by_item_ids(ids, n_items=n, exclude_session_items=exclude_session_items)
    except ValueError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    who = f"visitor {visitor_name}" if visitor is not None else "a new visitor"
    if ids:
        viewed = [part.strip() for part in items.split(",")] if item_texts is not None else map(str, ids)
        who += f" viewing {', '.join(viewed)}"
    if visitor is not None and ids and not known:
        who += f" (visitor {visitor_name} is unknown to {loaded.name}: from the session alone)"
    shown = [str(item_id) for item_id, _ in recs] if item_texts is None else \
        _shop_item_ids([item_id for item_id, _ in recs], item_texts)
    table = Table(title=f"{loaded.name}: {escape(who)}" + (" (cold start: popular items)" if recs.is_fallback else ""))
    table.add_column("rank", justify="right")
    table.add_column("item_id", justify="right")
    table.add_column("score", justify="right")
    reasons = _explain(explainer, loaded, recs, visitor if known or not ids else None, ids) if explainer else None
    if reasons is not None:
        table.add_column("why")
    for rank, ((_, score), item_name) in enumerate(zip(recs, shown, strict=True), 1):
        cells = [str(rank), escape(item_name), f"{score:.4f}"]
        if reasons is not None:
            cells.append(reasons[rank - 1])
        table.add_row(*cells)
    console.print(table)


def _load_explainer(selection):
    from funnelrec.models.base import ArtifactError
    from funnelrec.models.explainable.explainer import RecommendationExplainer
    from funnelrec.runs import EXPLAINER_DIR

    if selection.explainer_dir is None:
        where = selection.run_dir or selection.root.parent
        _fail(f"--explain needs the run's explainer, and {where / EXPLAINER_DIR} has none; give a model "
              "of a run written by `funnelrec demo` or `funnelrec train`", EXIT_BAD_INPUT)
    try:
        return RecommendationExplainer.load(selection.explainer_dir)
    except (ArtifactError, KeyError, ValueError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)


def _explain(explainer, model, recs, visitor: int | None, session_item_ids: list[int] | None) -> list[str]:
    """One line per recommendation: the explainer's summary and confidence (as the service explains)."""
    explanations = explainer.explain_batch(
        user_id=explainer.anonymous_visitor_id if visitor is None else visitor,
        recommendations=list(recs), model_name=model.name, session_item_ids=session_item_ids,
        component_weights=getattr(recs, "component_weights", None), is_fallback=recs.is_fallback,
        funnel_stage="new" if visitor is None else None,
    )
    from rich.markup import escape

    return [f"{escape(e.get_summary())} [dim](confidence {e.confidence:.2f})[/]" for e in explanations]


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
    artifacts: Annotated[Path, typer.Option(help="A run folder (its models and explainer/), one model "
                                                 "folder, or a folder of runs (the newest is used, and said so).")],
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    timeout_keep_alive: Annotated[int, typer.Option(
        min=1, help="Seconds an idle keep-alive connection stays open.")] = 5,
    body_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has to send a request body (408 and closed past it).")] = 10.0,
) -> None:
    """Serve the saved models over HTTP (FastAPI; docs at /docs). API key: FUNNELREC_API_KEY."""
    import uvicorn

    from funnelrec.serving.app import create_app

    selection = _select(artifacts)
    web = create_app(selection.root, body_timeout_s=body_timeout)

    class AnnouncingServer(uvicorn.Server):
        """Says where it listens once bound: with --port 0 only the socket knows the port."""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                console.print(f"Serving {', '.join(selection.model_dirs)} from {selection.root} "
                              f"on http://{host}:{bound} (docs at /docs)")

    server = AnnouncingServer(uvicorn.Config(
        web, host=host, port=port, log_level=_log_level.lower(), timeout_keep_alive=timeout_keep_alive))
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
