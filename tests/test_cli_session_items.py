"""`funnelrec recommend --items`: the session's own items are left out unless asked to keep them."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from funnelrec.cli import app
from funnelrec.models import PopularItemsRecommender

ROW = re.compile(r"^\W*(\d+)\W+(-?\d+)\W+(-?\d+\.\d+)\W*$")  # rank, item_id, score


def _recommended(output: str) -> list[int]:
    return [int(m.group(2)) for line in output.splitlines() if (m := ROW.match(line))]


def test_recommend_leaves_the_viewed_item_out_unless_told(tmp_path, tiny_split):
    train, _, _ = tiny_split
    folder = PopularItemsRecommender().fit(train).save(tmp_path / "popular")
    viewed = int(train["item_id"].value_counts().index[0])  # Popular ranks it first
    runner = CliRunner()
    left_out = runner.invoke(app, ["recommend", "--model", str(folder), "--items", str(viewed), "-n", "3"])
    assert left_out.exit_code == 0, left_out.output
    items = _recommended(left_out.output)
    assert len(items) == 3 and viewed not in items
    kept = runner.invoke(app, ["recommend", "--model", str(folder), "--items", str(viewed), "-n", "3",
                               "--include-session-items"])
    assert kept.exit_code == 0, kept.output
    assert _recommended(kept.output)[0] == viewed
