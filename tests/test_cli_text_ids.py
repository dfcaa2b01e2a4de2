"""`funnelrec recommend` on a run trained with --string-ids: --items and --visitor are the shop's
text ids, and the table (explanations included) shows them, never the codes the models know."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from funnelrec.cli import app
from funnelrec.config import settings
from funnelrec.models.base import Recommender

runner = CliRunner()
T = 1_430_624_917_650  # 2015-05-03 in milliseconds since the epoch


def sku(k: int) -> str:
    return f"SKU-{7 + 13 * k:04d}"  # code k (sorted position) is never the number in the text


def shop_export(path: Path, visitor_prefix: str = "user-", n_visitors: int = 80, n_items: int = 30) -> Path:
    """Two visits per visitor, each browsing neighbouring SKUs (co-views for session-kNN)."""
    lines = ["timestamp,visitorid,event,itemid"]
    for v in range(n_visitors):
        for visit in range(2):
            start = T + v * 7_200_000 + visit * 3_600_000  # visits an hour apart: two sessions
            for step in range(3):
                item = sku((v + 5 * visit + step) % n_items)
                lines.append(f"{start + step * 60_000},{visitor_prefix}{12 + v},view,{item}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _flat(output: str) -> str:
    return " ".join(output.split())


def _items(output: str) -> list[str]:
    """The item column of the printed table (rows whose rank cell holds a number)."""
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in output.splitlines()]
    return [cells[1] for cells in rows if len(cells) > 2 and cells[0].isdigit()]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A run of session-kNN trained on an export with text visitor and item ids."""
    root = tmp_path_factory.mktemp("text_ids")
    export = shop_export(root / "shop.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "data_dir", root / "data")
        patch.setattr(settings, "artifacts_dir", root / "artifacts")
        trained = runner.invoke(app, ["--quiet", "train", "session_knn", "--events-file", str(export),
                                      "--string-ids", "visitor,item"])
    assert trained.exit_code == 0, trained.output
    (run,) = (root / "artifacts").iterdir()
    return run


def _roles(run: Path) -> dict[str, list[str]]:
    return json.loads((run / "id_maps.json").read_text())["roles"]


def test_recommend_reads_and_prints_the_shops_item_ids(text_run):
    viewed = [sku(3), sku(4)]
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(text_run), "--items", ",".join(viewed),
                                 "-n", "5"])
    assert result.exit_code == 0, result.output
    shown = _items(result.output)
    # the model's own answer for the codes of those ids, translated back by the run's map
    items = _roles(text_run)["item"]
    model = Recommender.load(text_run / "session_knn")
    codes = [items.index(text) for text in viewed]
    expected = [items[code] for code, _ in model.recommend_by_item_ids(codes, n_items=5)]
    assert shown == expected and len(shown) == 5 and not set(viewed) & set(shown)
    assert f"viewing {', '.join(viewed)}" in _flat(result.output) and "cold start" not in result.output


def test_recommend_takes_a_text_visitor_and_explains_with_text_ids(text_run):
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(text_run), "--visitor", "user-12",
                                 "--items", sku(0), "-n", "3", "--explain"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert f"visitor user-12 viewing {sku(0)}" in flat and flat.count("(confidence ") == 3
    assert all(item.startswith("SKU-") for item in _items(result.output))
    assert re.search(r"item SKU-\d{4}", flat)  # the reasons name items by the shop's ids ...
    assert not re.search(r"item \d", flat)  # ... never by code


def test_an_unknown_text_id_is_an_unknown_item_and_said_so(text_run):
    # as an item id unknown to the model is: ignored, the answer from what is known (here nothing)
    result = runner.invoke(app, ["--quiet", "recommend", "--model", str(text_run), "--items", "SKU-9999",
                                 "-n", "3"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert "'SKU-9999'" in flat and "unknown" in flat and "cold start" in flat
    assert len(_items(result.output)) == 3 and all(i.startswith("SKU-") for i in _items(result.output))
    stranger = runner.invoke(app, ["--quiet", "recommend", "--model", str(text_run), "--visitor", "user-nobody",
                                   "-n", "2"])
    assert stranger.exit_code == 0 and "cold start" in _flat(stranger.output), stranger.output


@pytest.mark.parametrize(("args", "named"), [
    (["--items", f"{sku(1)},,{sku(2)}"], "id 2 is empty"),
    (["--items", ""], "id 1 is empty"),
    (["--visitor", ""], "--visitor is empty"),
])
def test_a_bad_text_id_exits_2(text_run, args, named):
    result = runner.invoke(app, ["recommend", "--model", str(text_run), *args])
    assert result.exit_code == 2 and named in _flat(result.output), result.output
    assert "Traceback" not in result.output


def test_roles_without_a_map_stay_integers(tmp_path, monkeypatch):
    # text items, integer visitors: --visitor is still an integer, named when it is not one
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    monkeypatch.setattr(settings, "artifacts_dir", tmp_path / "artifacts")
    export = shop_export(tmp_path / "shop.csv", visitor_prefix="")
    trained = runner.invoke(app, ["--quiet", "train", "popular", "--events-file", str(export), "--string-ids", "item"])
    assert trained.exit_code == 0, trained.output
    (run,) = (tmp_path / "artifacts").iterdir()
    assert set(_roles(run)) == {"item"}
    known = runner.invoke(app, ["--quiet", "recommend", "--model", str(run), "--visitor", "12", "-n", "3"])
    assert known.exit_code == 0 and "cold start" not in known.output, known.output
    assert len(_items(known.output)) == 3 and all(i.startswith("SKU-") for i in _items(known.output))
    bad = runner.invoke(app, ["recommend", "--model", str(run), "--visitor", "user-12"])
    assert bad.exit_code == 2 and "'user-12' is not a visitor id" in _flat(bad.output), bad.output


def test_a_damaged_id_map_exits_2_naming_it(text_run, tmp_path):
    run = shutil.copytree(text_run, tmp_path / text_run.name)
    (run / "id_maps.json").write_text("{not json")
    result = runner.invoke(app, ["recommend", "--model", str(run), "--items", sku(1)])
    assert result.exit_code == 2 and "id_maps.json" in "".join(result.output.split()), result.output
    assert "Traceback" not in result.output
