"""Run folders: where a ``demo`` or ``train`` run keeps its models, and how a folder is read back.

Every run writes ``<artifacts_dir>/<run>/``: one subfolder per saved model, ``explainer/`` when
one was fitted, and ``run.json`` (when it ran, on which data, each model's fit seconds). Its
report and results tables go to ``<reports_dir>/<run>/``. ``<run>`` is the start time,
``YYYYMMDD-HHMMSS`` (``-2``, ``-3``... when two runs start in the same second).

:func:`select_models` reads what a user points at (a model folder, a run folder, or a folder of
runs such as ``artifacts/`` itself) and says what it chose, so that no command takes one model
of many without telling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from funnelrec.errors import ArtifactError

__all__ = [
    "EXPLAINER_DIR",
    "RUN_INFO_FILE",
    "ModelSelection",
    "find_runs",
    "new_run_dir",
    "read_run_info",
    "select_models",
    "write_run_info",
]

RUN_INFO_FILE = "run.json"
EXPLAINER_DIR = "explainer"
_RUN_NAME_FORMAT = "%Y%m%d-%H%M%S"


def new_run_dir(root: str | Path, started: datetime | None = None) -> Path:
    """A new, empty run folder ``root/<start time>`` (created; suffixed when the name is taken)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = (started or datetime.now()).strftime(_RUN_NAME_FORMAT)
    for n in range(1, 1000):
        candidate = root / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ArtifactError(f"cannot create a run folder in {root}: 999 runs named {name} already")


def write_run_info(run_dir: str | Path, **fields: Any) -> Path:
    """Merge ``fields`` into ``run_dir/run.json`` (created with the run's ``created`` time)."""
    path = Path(run_dir) / RUN_INFO_FILE
    info = read_run_info(run_dir)
    info.setdefault("created", datetime.now().isoformat(timespec="seconds"))
    info.update(fields)
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder; ``{}`` when there is none (runs of older releases)."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupted: {exc}") from exc
    if not isinstance(info, dict):
        raise ArtifactError(f"{path} is corrupted: expected a JSON object, got {type(info).__name__}")
    return info


def _model_dirs(folder: Path) -> dict[str, Path]:
    # one rule for what a model folder is (registered type, leftovers of saves skipped...)
    from funnelrec.models.base import find_model_dirs

    return find_model_dirs(folder)


def _is_model_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _loose_models(folder: Path) -> list[str]:
    """Model folders directly in ``folder`` (a folder of runs should have none)."""
    return sorted(
        sub.name for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith(".") and _is_model_dir(sub)
    )


def _created(run_dir: Path) -> float:
    """When a run started: ``run.json``'s ``created``, else the folder's modification time."""
    try:
        created = read_run_info(run_dir).get("created")
        if created:
            return datetime.fromisoformat(str(created)).timestamp()
    except (ArtifactError, ValueError):
        pass
    return run_dir.stat().st_mtime


def find_runs(root: str | Path) -> list[Path]:
    """Subfolders of ``root`` that hold saved models (run folders), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [
        sub for sub in sorted(root.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and not _is_model_dir(sub) and _model_dirs(sub)
    ]  # fmt: skip
    return sorted(runs, key=lambda run: (_created(run), run.name))


@dataclass
class ModelSelection:
    """What a path given to ``evaluate``, ``serve``, ``recommend`` or ``report`` stands for."""

    #: The folder to load from: a run folder, or a single model folder.
    root: Path
    #: Model key (folder name) -> model folder.
    model_dirs: dict[str, Path]
    #: The run folder the models belong to (``None`` for a model folder outside a run).
    run_dir: Path | None
    #: What was chosen and why, when the path held more than was taken; ``None`` otherwise.
    note: str | None = None
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def explainer_dir(self) -> Path | None:
        """The run's saved explainer, if it has one."""
        if self.run_dir is None or not (self.run_dir / EXPLAINER_DIR / "config.json").is_file():
            return None
        return self.run_dir / EXPLAINER_DIR

    @property
    def run_name(self) -> str:
        return (self.run_dir or self.root).name

    def model_types(self) -> dict[str, str]:
        """Model key -> registry key (``"als"``...), read from each ``config.json``."""
        types = {}
        for key, folder in self.model_dirs.items():
            config = json.loads((folder / "config.json").read_text())  # find_model_dirs read it
            types[key] = str(config["model"])
        return types


def select_models(path: str | Path) -> ModelSelection:
    """Read a model folder, a run folder or a folder of runs (``artifacts/``).

    - a model folder (``config.json``): that model; its run is the parent when the parent is one;
    - a run folder (model subfolders): every model in it;
    - a folder of runs: the newest run, and a :attr:`ModelSelection.note` listing the others
      and any model folders lying outside a run (as older releases' ``train`` wrote them).

    Raises :class:`ArtifactError` naming the path when there is no model to take.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no saved models in {path}: it does not exist (run `funnelrec demo` or "
                            "`funnelrec train` first)")
    if _is_model_dir(path):
        parent = path.parent
        run_dir = parent if (parent / RUN_INFO_FILE).is_file() or (parent / EXPLAINER_DIR).is_dir() else None
        return ModelSelection(path, {path.name: path}, run_dir, None, read_run_info(run_dir) if run_dir else {})
    runs = find_runs(path)
    if runs:
        loose = _loose_models(path)
        chosen = runs[-1]
        note = (
            f"{path} holds {len(runs)} runs ({', '.join(r.name for r in runs)}); using the newest, "
            f"{chosen.name}" if len(runs) > 1 else f"{path} holds one run; using {chosen.name}"
        )
        if loose:
            note += f"; ignoring model folders outside any run: {', '.join(sorted(loose))}"
        note += f". Give {chosen} (or another run's folder) to choose."
        return ModelSelection(chosen, _model_dirs(chosen), chosen, note, read_run_info(chosen))
    loose = _model_dirs(path)
    if loose:
        return ModelSelection(path, loose, path, None, read_run_info(path))
    raise ArtifactError(
        f"no saved models in {path}: expected a model folder (with config.json), a run folder of "
        "them, or a folder of runs (run `funnelrec demo` or `funnelrec train` first)"
    )
