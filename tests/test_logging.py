"""funnelrec's log lines and its progress bars share stderr without garbling each other."""

from __future__ import annotations

import sys

from loguru import logger
from tqdm import tqdm

import funnelrec


def test_a_line_logged_while_a_bar_is_drawn_starts_its_own_line(capsys):
    funnelrec.enable_logging("INFO")
    try:
        bar = tqdm(total=3, file=sys.stderr, mininterval=0, desc="fitting")
        bar.update(1)
        logger.info("epoch 1 done")
        bar.update(2)
        bar.close()
    finally:
        logger.remove()
        logger.disable("funnelrec")
    err = capsys.readouterr().err
    (line,) = [seg for seg in err.replace("\r", "\n").split("\n") if "epoch 1 done" in seg]
    assert "fitting" not in line and "%" not in line
    assert err.index("epoch 1 done") < err.rindex("3/3")  # the bar is redrawn below the line
