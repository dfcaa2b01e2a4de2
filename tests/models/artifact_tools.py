"""Helpers for tests that damage saved artifacts on purpose.

A test of the *consistency* checks must get past the checksums: it rewrites a file and then
records the new checksums, as a buggy writer (not a flipped disk bit) would leave the folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from funnelrec.models.artifacts import CHECKSUM_KEY, file_checksums


def read_state(folder: Path, name: str = "state.npz") -> dict[str, np.ndarray]:
    with np.load(folder / name, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def record_checksums(folder: Path, config_name: str = "config.json") -> None:
    """Re-record the SHA-256 of every file of ``folder`` in its config, as a save would."""
    config_path = folder / config_name
    config = json.loads(config_path.read_text())
    config[CHECKSUM_KEY] = file_checksums(folder, config_name)
    config_path.write_text(json.dumps(config, indent=2))


def rewrite_state(folder: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    """Replace ``folder/state.npz`` by ``change(arrays)`` and record the new checksums."""
    np.savez(folder / "state.npz", **change(read_state(folder)))
    record_checksums(folder)


def edit_config(folder: Path, change: Callable[[dict], object]) -> None:
    """Apply ``change`` to ``folder/config.json`` (in place, on the parsed JSON)."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    change(config)
    config_path.write_text(json.dumps(config, indent=2))


# --------------------------------------------------------------------------- fault injection
#: Exit code of a process killed by :func:`install_faults` (``os._exit``: no cleanup runs).
KILLED = 86


def install_faults(k: int, act: Callable[[str], None], setattr_: Callable = setattr) -> list[str]:
    """Make the ``k``-th file-system step of what runs next call ``act(step)``.

    The steps, in order of occurrence: before each ``tempfile.mkdtemp``, ``os.replace``,
    ``os.fsync``, ``shutil.rmtree``, ``np.savez`` and ``Path.write_text``, and for the last
    three also *during* the call (half the file written, or one file of the tree deleted, when
    ``act`` runs). ``act`` kills the process (``os._exit``) or raises. Returns the list the
    steps seen are appended to. ``setattr_`` is ``monkeypatch.setattr`` in-process.
    """
    import io
    import os
    import shutil
    import tempfile

    seen: list[str] = []

    def step(what: str, partial: Callable[[], None] | None = None) -> None:
        seen.append(what)
        if len(seen) == k:
            if partial is not None:
                partial()
            act(what)

    real_mkdtemp, real_replace, real_fsync = tempfile.mkdtemp, os.replace, os.fsync
    real_rmtree, real_savez, real_write_text = shutil.rmtree, np.savez, Path.write_text

    def mkdtemp(*args, **kwargs):
        step("before mkdtemp")
        return real_mkdtemp(*args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        step(f"before os.replace {Path(src).name} -> {Path(dst).name}")
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        step("before os.fsync")
        return real_fsync(fd)

    def rmtree(path, ignore_errors=False, *args, **kwargs):
        def delete_one() -> None:
            files = sorted(p for p in Path(path).rglob("*") if p.is_file())
            if files:
                files[0].unlink()

        try:
            step(f"before rmtree {Path(path).name}")
            step(f"during rmtree {Path(path).name}", delete_one)
        except OSError:
            if ignore_errors:
                return None
            raise
        return real_rmtree(path, ignore_errors, *args, **kwargs)

    def savez(file, *args, **kwargs):
        def half() -> None:
            buffer = io.BytesIO()
            real_savez(buffer, *args, **kwargs)
            Path(file).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

        step(f"before savez {Path(file).name}")
        step(f"during savez {Path(file).name}", half)
        return real_savez(file, *args, **kwargs)

    def write_text(self, data, *args, **kwargs):
        step(f"before write_text {self.name}")
        step(f"during write_text {self.name}", lambda: real_write_text(self, data[: len(data) // 2]))
        return real_write_text(self, data, *args, **kwargs)

    setattr_(tempfile, "mkdtemp", mkdtemp)
    setattr_(os, "replace", replace)
    setattr_(os, "fsync", fsync)
    setattr_(shutil, "rmtree", rmtree)
    setattr_(np, "savez", savez)
    setattr_(Path, "write_text", write_text)
    return seen
