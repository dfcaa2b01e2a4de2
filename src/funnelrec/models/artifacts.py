"""How a saved artifact folder is written and read: atomically, checksummed, checked on load.

Every saved model (and the explainer) is a folder of ``config.json`` plus npz / safetensors /
FAISS files. This module holds the file-level rules all of them share:

- :func:`atomic_dir` writes the folder beside its target and swaps it in with two renames;
  :func:`recover_interrupted_save` repairs what a save killed at any step left behind, so the
  old or the new model is always complete under its name;
- :func:`file_checksums` / :func:`verify_checksums`: the SHA-256 of every file, recorded in
  ``config.json`` and checked on load;
- :func:`read_npz` reads an npz without pickle, checking each array's header against the bytes
  stored before anything is allocated;
- :class:`StateArrays`: checks of loaded arrays (dtype, shape, index range, finiteness) whose
  errors name the file and the array;
- :func:`resolve_inside`: a path recorded in an artifact must stay inside its folder.

Leftovers of an interrupted save are hidden folders named ``.<name>.tmp-<pid>-<token>`` (being
written) and ``.<name>.old-<pid>-<token>`` (the previous copy, while it is swapped out). A save
holds an exclusive ``flock`` on each of its folders while it runs; a leftover whose lock can be
taken belongs to no running save (the pid in its name is not trusted: after a reboot or in a
container another process may have it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NoReturn

import numpy as np
import psutil
from loguru import logger

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid in a leftover's name decides whether its save runs
    fcntl = None  # type: ignore[assignment]

from funnelrec.errors import ArtifactError

CONFIG_FILE = "config.json"
STATE_FILE = "state.npz"
#: ``config.json`` key of the ``{relative path: sha256 hex digest}`` map of the folder's files.
CHECKSUM_KEY = "sha256"
#: ``.<target>.tmp-<pid>-<token>`` / ``.<target>.old-<pid>-<token>`` (older releases wrote
#: ``.<target>.tmp-<token>`` and ``.<target>.old-<pid>``).
_LEFTOVER = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)(?:-|$))?")
#: Deflate cannot expand data more than about 1032 times; a member claiming more is forged.
_MAX_DEFLATE_RATIO = 1100
_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------- atomic folders
def is_leftover(name: str) -> bool:
    """Whether a folder name is a temporary or swapped-out copy left by a save."""
    return _LEFTOVER.match(name) is not None


class _NoLocking(Exception):
    """``flock`` is not available for this path (no ``fcntl``, or a file system without it)."""


def _flock(path: Path, *, wait: bool) -> int | None:
    """A descriptor of ``path`` holding an exclusive ``flock`` on it; ``None`` if another
    descriptor holds the lock (only when not ``wait``).

    The lock is on the folder itself (its inode), so it moves with the folder's renames, and it
    is released when the descriptor is closed, which the kernel does when the process dies.
    ``flock`` locks of two descriptors conflict even within one process, so a save running in
    another thread counts as running too. ``OSError``: ``path`` cannot be opened (it is gone).
    """
    if fcntl is None:
        raise _NoLocking
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise _NoLocking from exc
    return fd


def _lock_in_place(path: Path, stack: ExitStack) -> bool:
    """Lock the folder now at ``path`` for as long as ``stack`` is open, waiting for the lock.

    Another process may rename or delete the folder while this one waits: the lock is kept only
    once it is held on the folder still found at ``path``. False: nothing is at ``path`` (any
    more), or locks are not available here (the save then runs unlocked).
    """
    while True:
        try:
            fd = _flock(path, wait=True)
        except (_NoLocking, FileNotFoundError):
            return False
        assert fd is not None
        held = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            stack.callback(os.close, fd)
            return True
        os.close(fd)
        if now is None:
            return False


def _save_is_running(entry: Path, pid: int | None, stack: ExitStack) -> bool:
    """Whether the save that left ``entry`` still runs; if not, ``entry`` stays locked by
    ``stack``, so that no other process repairs it at the same time."""
    try:
        fd = _flock(entry, wait=False)
    except _NoLocking:
        # no locks here: fall back to the pid in the name (wrong where the pid was reused)
        return pid is not None and pid != os.getpid() and psutil.pid_exists(pid)
    except OSError:  # removed meanwhile (by another repair)
        return True
    if fd is None:
        return True
    stack.callback(os.close, fd)
    return False


def _leftovers(target: Path, stack: ExitStack) -> list[tuple[Path, str]]:
    """``(path, "tmp" | "old")`` left beside ``target`` by saves no longer running, each locked
    by ``stack`` while the caller repairs it."""
    parent = target.parent
    if not parent.is_dir():
        return []
    found = []
    for entry in parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or match["target"] != target.name:
            continue
        pid = int(match["pid"]) if match["pid"] else None
        # a save running right now (in this or another process) holds its folders' locks
        if _save_is_running(entry, pid, stack):
            continue
        found.append((entry, match["kind"]))
    return found


def _looks_complete(folder: Path) -> bool:
    """A swapped-out copy is whole unless a crash hit while it was being deleted."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        listed = config.get(CHECKSUM_KEY) if isinstance(config, dict) else None
    except (OSError, ValueError):
        return False
    if isinstance(listed, dict):
        return all((folder / name).is_file() for name in listed)
    return (folder / STATE_FILE).is_file()  # saved before checksums existed


def recover_interrupted_save(target: str | Path) -> None:
    """Repair what a save of ``target`` that was killed mid-way left beside it.

    Killed between its two renames, a save leaves no ``target`` but the complete previous copy
    (``.<name>.old-*``): it is renamed back. Every other leftover (a half-written ``.tmp-``
    folder, an ``.old-`` copy whose deletion was cut short) is removed. Folders of a save still
    running (in this or another process: it holds their locks) are left alone.
    """
    target = Path(target)
    with ExitStack() as locks:  # the leftovers stay locked while they are repaired
        stale = _leftovers(target, locks)
        if not stale:
            return
        if not os.path.lexists(target):
            whole = [path for path, kind in stale if kind == "old" and _looks_complete(path)]
            if whole:
                previous = max(whole, key=lambda p: p.stat().st_mtime)
                os.replace(previous, target)
                logger.warning("Restored {} from {}: a save was interrupted before it was complete",
                               target, previous.name)
                stale = [(path, kind) for path, kind in stale if path != previous]
        for path, _ in stale:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("Removed {}, left by an interrupted save of {}", path, target)


def recover_interrupted_saves(root: str | Path) -> None:
    """:func:`recover_interrupted_save` for every target with leftovers in the folder ``root``.

    Best effort: a read-only folder is only logged (its leftovers are ignored by readers anyway).
    """
    root = Path(root)
    targets = {m["target"] for m in map(_LEFTOVER.match, (p.name for p in root.iterdir())) if m}
    for name in sorted(targets):
        try:
            recover_interrupted_save(root / name)
        except OSError as exc:
            logger.warning("Cannot repair the interrupted save of {}: {}", root / name, exc)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk before it is renamed into place."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath))


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary folder beside ``target``, then swap it in.

    What an earlier interrupted save of ``target`` left is repaired first
    (:func:`recover_interrupted_save`). On an exception the temporary folder is removed and an
    existing ``target`` is untouched. A previous ``target`` is renamed aside only once the new
    folder is complete and flushed, and put back if the second rename fails; whenever the
    process dies, the old or the new folder is complete under ``target`` or recoverable.
    The temporary folder, and the previous ``target`` from before it is renamed aside, stay
    locked (``flock``) until the save ends, so that no repair takes them for leftovers.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        recover_interrupted_save(target)
    except OSError as exc:  # repairing is a courtesy; the new folder is written all the same
        logger.warning("Cannot repair an earlier interrupted save of {}: {}", target, exc)
    with ExitStack() as locks:
        while True:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
            # a repair that ran between mkdtemp and the lock took the empty folder for a leftover
            if _lock_in_place(tmp, locks) or os.path.isdir(tmp):
                break
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a saved model is a normal folder
            yield tmp
            _fsync_tree(tmp)
            _swap_in(tmp, target, locks)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _swap_in(tmp: Path, target: Path, locks: ExitStack) -> None:
    if os.path.lexists(target):
        _lock_in_place(target, locks)  # it is renamed to ``old`` below, lock and all
    if not os.path.lexists(target):
        os.replace(tmp, target)
        _fsync(target.parent)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)  # the previous folder goes back under its name
        raise
    _fsync(target.parent)
    try:
        shutil.rmtree(old)
    except OSError as exc:  # the new folder is in place; the next save removes the old copy
        logger.warning("Saved {} but could not remove the previous copy {}: {}", target, old, exc)


# --------------------------------------------------------------------------- paths
def resolve_inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused (:class:`ArtifactError`) unless it stays inside ``root``.

    ``relative`` comes from a file: an absolute path, a ``..`` part or a symbolic link that
    leads out of the folder would make a load read files that are not part of the artifact.
    """
    if not isinstance(relative, str) or not relative or relative.strip() in ("", "."):
        raise ArtifactError(f"{what}: {relative!r} is not a path inside {root}")
    posix = PurePosixPath(relative)
    if posix.is_absolute() or PureWindowsPath(relative).is_absolute() or PureWindowsPath(relative).drive \
            or ".." in posix.parts or "\\" in relative:
        raise ArtifactError(f"{what}: {relative!r} is not a relative path inside the artifact folder {root}")
    path = root / posix
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise ArtifactError(f"{what}: {path} leads to {resolved}, outside the artifact folder {base}")
    return path


# --------------------------------------------------------------------------- config.json
_JSON_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list", float: "a number"}


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; unreadable, not JSON or not an object: :class:`ArtifactError`."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupted: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} is corrupted: expected a JSON object, got {type(config).__name__}")
    return config


def config_field(config: Mapping[str, Any], name: str, kind: type, path: Path) -> Any:
    """``config[name]``, which must be present and of JSON type ``kind`` (``true`` is no integer)."""
    value = config.get(name)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        shown = json.dumps(value)
        raise ArtifactError(
            f"{path} is corrupted: {name!r} must be {_JSON_TYPE_NAMES.get(kind, kind.__name__)}, "
            f"got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        )
    return value


# --------------------------------------------------------------------------- checksums
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _artifact_files(folder: Path, root: Path, config_name: str) -> Iterator[Path]:
    """The files a folder's checksums cover: all of them but the file recording them; a nested
    artifact (a subfolder with a ``config.json``) by that ``config.json``, which pins its files."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if (entry / CONFIG_FILE).is_file():
                yield entry / CONFIG_FILE
            else:
                yield from _artifact_files(entry, root, config_name)
        elif not (folder == root and entry.name == config_name):
            yield entry


def file_checksums(folder: str | Path, config_name: str = CONFIG_FILE) -> dict[str, str]:
    """``{path relative to folder: sha256}`` of every file the folder's ``config_name`` must pin."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): _sha256(path)
            for path in _artifact_files(folder, folder, config_name)}


def verify_checksums(folder: Path, config: Mapping[str, Any], config_path: Path) -> None:
    """Check every file listed in ``config[CHECKSUM_KEY]`` against its recorded SHA-256.

    A missing or altered file is an :class:`ArtifactError` naming it. A folder saved before
    checksums existed loads with a warning; a file nobody listed is logged.
    """
    listed = config.get(CHECKSUM_KEY)
    if listed is None:
        logger.warning("{} records no checksums (saved by an older funnelrec): its files are not verified",
                       config_path)
        return
    if not isinstance(listed, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) for name, digest in listed.items()
    ):
        raise ArtifactError(f"{config_path} is corrupted: {CHECKSUM_KEY!r} must map file names to hex digests")
    for name, expected in listed.items():
        path = resolve_inside(folder, name, f"{config_path} lists a file")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {config_path} lists it as part of the artifact")
        actual = _sha256(path)
        if actual != expected.lower():
            raise ArtifactError(
                f"checksum mismatch: {path} is corrupted or was changed after it was saved: "
                f"expected sha256 {expected} (recorded in {config_path.name}), got {actual}"
            )
    present = {p.relative_to(folder).as_posix() for p in _artifact_files(folder, folder, config_path.name)}
    unlisted = sorted(present - set(listed))
    if unlisted:
        logger.warning("{}: files not recorded in {} are ignored: {}", folder, config_path.name, unlisted)


# --------------------------------------------------------------------------- npz reading
def _human(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _checked_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member whose ``.npy`` header does not match the bytes stored after it."""
    name = info.filename.removesuffix(".npy")
    where = f"{path}: array {name!r}"
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ArtifactError(f"{where} is stored with {info.compress_size} bytes but claims {info.file_size}")
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise ArtifactError(f"{where} claims {_human(info.file_size)} from {info.compress_size} compressed bytes")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArtifactError(f"{where} uses an unsupported compression ({info.compress_type})")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ArtifactError(f"{where} has an unsupported .npy format version {version}")
        header_bytes = member.tell()
    if dtype.hasobject:
        raise ArtifactError(f"{where} holds Python objects ({dtype}); only plain arrays are read (no pickle)")
    if any(d < 0 for d in shape):
        raise ArtifactError(f"{where} declares a negative shape {shape}")
    needed = math.prod(shape) * dtype.itemsize
    stored = info.file_size - header_bytes
    if needed != stored:
        raise ArtifactError(
            f"{where} declares shape {shape} of {dtype} ({_human(needed)}) but the file stores "
            f"{_human(stored)} of data: the file is corrupted"
        )


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the npz file ``path`` (``name -> array``), never unpickling anything.

    Each member's header is checked against its stored size before its array is allocated, so
    a forged header (say, one declaring hundreds of GiB) is an :class:`ArtifactError`, not an
    out-of-memory crash. A missing, truncated or malformed file is an :class:`ArtifactError`
    naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ArtifactError(f"{path}: member {info.filename!r} is not an array (.npy)")
                _checked_header(path, archive, info)
                with archive.open(info) as member:
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(member, allow_pickle=False)
    except ArtifactError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ArtifactError(f"{path} is corrupted or incomplete: {exc}") from exc
    return arrays


# --------------------------------------------------------------------------- array checks
_KINDS = {"f": "f", "i": "iu", "b": "b", "U": "U", "n": "biuf"}
_KIND_NAMES = {"f": "floats", "i": "integers", "b": "booleans", "U": "strings", "n": "numbers"}


class StateArrays:
    """The arrays of a state file being loaded, and checks that name the file and the array.

    A model's ``_validate_state`` hook calls :meth:`get` (dtype kind, shape, range,
    finiteness), :meth:`offsets` and :meth:`csr` for its own arrays, so that an inconsistent
    file fails at load time with an :class:`ArtifactError`, never later inside a request.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], path: Path) -> None:
        self.arrays = dict(arrays)
        self.path = Path(path)

    def __contains__(self, name: object) -> bool:
        return name in self.arrays

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ArtifactError(f"{self.path}: array {name!r} {problem}")

    def get(
        self,
        name: str,
        kind: str,
        shape: tuple[int | None, ...],
        *,
        finite: bool = False,
        low: float | None = None,
        high: float | None = None,
    ) -> np.ndarray:
        """The array ``name``, checked.

        ``kind``: ``"f"`` floats, ``"i"`` integers, ``"b"`` booleans, ``"U"`` strings, ``"n"``
        any number. ``shape``: one entry per dimension, ``None`` for any length. ``finite``: no
        NaN or infinity. ``low`` / ``high``: every value in ``[low, high)``.
        """
        if name not in self.arrays:
            raise ArtifactError(f"{self.path} lacks the array {name!r}")
        array = self.arrays[name]
        if array.dtype.kind not in _KINDS[kind]:
            self.fail(name, f"must hold {_KIND_NAMES[kind]}, holds {array.dtype}")
        if array.ndim != len(shape) or any(want is not None and got != want
                                           for got, want in zip(array.shape, shape, strict=True)):
            expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            self.fail(name, f"has shape {array.shape}, expected {expected}")
        if finite and array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array.ravel()))
            self.fail(name, f"holds {len(bad)} NaN or infinite value(s), the first at flat index {int(bad[0])}")
        if array.size and (low is not None or high is not None):
            lo, hi = array.min(), array.max()
            if (low is not None and lo < low) or (high is not None and hi >= high):
                bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'})"
                self.fail(name, f"holds values from {lo} to {hi}, outside {bounds}")
        return array

    def ids(self, name: str) -> np.ndarray:
        """A 1-D array of unique integer ids."""
        ids = self.get(name, "i", (None,))
        if len(np.unique(ids)) != len(ids):
            self.fail(name, "holds duplicated ids")
        return ids

    def offsets(self, name: str, n_rows: int, n_values: int) -> np.ndarray:
        """Row offsets into a flat array of ``n_values``: ``n_rows + 1`` entries, from 0 to
        ``n_values``, never decreasing."""
        offsets = self.get(name, "i", (n_rows + 1,))
        if offsets[0] != 0 or offsets[-1] != n_values:
            self.fail(name, f"must run from 0 to {n_values} (the values it indexes), runs from "
                            f"{offsets[0]} to {offsets[-1]}")
        if (np.diff(offsets) < 0).any():
            self.fail(name, "decreases: row offsets must never decrease")
        return offsets

    def csr(self, indptr: str, indices: str, data: str | None, shape: tuple[int, int]) -> None:
        """The three arrays of a CSR matrix of ``shape``: offsets, column indices in range and
        (``data``) finite values, one per index."""
        columns = self.get(indices, "i", (None,), low=0, high=shape[1])
        self.offsets(indptr, shape[0], len(columns))
        if data is not None:
            self.get(data, "n", (len(columns),), finite=True)

    def sequences(self, items: str, offsets: str, n_rows: int, n_items: int) -> None:
        """Per-row item sequences (a flat item index array and its offsets)."""
        flat = self.get(items, "i", (None,), low=0, high=n_items)
        self.offsets(offsets, n_rows, len(flat))


__all__ = [
    "CHECKSUM_KEY",
    "CONFIG_FILE",
    "STATE_FILE",
    "StateArrays",
    "atomic_dir",
    "config_field",
    "file_checksums",
    "is_leftover",
    "read_config",
    "read_npz",
    "recover_interrupted_save",
    "recover_interrupted_saves",
    "resolve_inside",
    "verify_checksums",
]
