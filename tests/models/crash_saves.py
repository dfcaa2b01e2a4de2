"""Helper process of test_artifact_safety: kill a save at each of its file-system steps.

``python crash_saves.py SOURCE TARGET SNAPSHOTS`` loads the model saved at SOURCE, then for
k = 1, 2, ...: forks a child that saves it to TARGET and dies (``os._exit``, so nothing is
cleaned up) at step k (see :func:`artifact_tools.install_faults`); copies TARGET's folder to
``SNAPSHOTS/<k>`` as the crash left it and restores the folder. It stops at the first k the
save survives and prints the steps as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from artifact_tools import KILLED, install_faults

from funnelrec.models.base import Recommender


def crash(step: str, note: Path) -> None:
    with open(note, "w") as handle:  # plain open: Path.write_text is one of the faulty steps
        handle.write(step)
    os._exit(KILLED)


def main(source: Path, target: Path, snapshots: Path) -> None:
    model = Recommender.load(source)
    root = target.parent
    pristine = snapshots / "pristine"
    shutil.copytree(root, pristine, symlinks=True)
    steps: list[str] = []
    for k in range(1, 1000):
        pid = os.fork()
        if pid == 0:  # the child: crash at step k
            install_faults(k, lambda what: crash(what, snapshots / "step.txt"))
            try:
                model.save(target)
            except BaseException:
                os._exit(1)
            os._exit(0)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code == 0:
            break
        if code != KILLED:
            sys.exit(f"the save failed at step {k} with exit code {code}")
        steps.append((snapshots / "step.txt").read_text())
        shutil.copytree(root, snapshots / str(k), symlinks=True)
        shutil.rmtree(root)
        shutil.copytree(pristine, root, symlinks=True)
    print(json.dumps(steps))


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:4]))
