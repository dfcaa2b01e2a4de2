"""Loading through the command line: bad files exit 2 with a message naming them, never a
traceback; own files load with --events-file, --columns, --string-ids, --timestamp-unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from funnelrec.cli import app
from funnelrec.config import settings

runner = CliRunner()
HEADER = "timestamp,visitorid,event,itemid,transactionid"
T = 1_430_624_917_650  # 2015-05-03 in milliseconds since the epoch


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    monkeypatch.setattr(settings, "artifacts_dir", tmp_path / "artifacts")
    monkeypatch.setattr(settings, "reports_dir", tmp_path / "reports")
    monkeypatch.setattr(settings, "progress_bars", True)  # restored after `--quiet` turned them off
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path


def flat(output: str) -> str:
    """The output without whitespace: rich wraps lines, long paths even within a word."""
    return "".join(output.split())


def bad_input(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = flat(result.output)
    assert "Traceback" not in text
    for part in expected:
        assert flat(part) in text, (part, text)
    return text


def write_raw(workdir: Path, rows: list[str]) -> Path:
    path = workdir / "data" / "raw" / "events.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def own_export(path: Path, n_visitors: int = 60) -> Path:
    """A shop's export: its own names, seconds, text ids, no transaction column."""
    lines = ["ts,user_id,action,sku"]
    for v in range(n_visitors):
        for step in range(4):
            ts = T // 1_000 + v * 3_600 + step * 60
            lines.append(f"{ts},u-{v},{'view' if step < 3 else 'addtocart'},sku-{(v + step) % 25}")
    path.write_text("\n".join(lines) + "\n")
    return path


OWN_OPTIONS = ["--columns", "timestamp=ts,visitor=user_id,event=action,item=sku", "--string-ids", "visitor,item"]


# --------------------------------------------------------------------------- bad data exits 2


@pytest.mark.parametrize("command", [["describe"], ["train", "popular"], ["demo", "--models", "popular"]])
def test_header_only_events_exit_2_naming_the_file(workdir, command) -> None:
    path = write_raw(workdir, [])
    bad_input(runner.invoke(app, ["--quiet", *command]), str(path), "no events")


def test_all_rows_dropped_exits_2(workdir) -> None:
    path = write_raw(workdir, [f"{T},x,view,1,", f"{T},y,view,2,"])
    text = bad_input(runner.invoke(app, ["--quiet", "describe", "--max-dropped-share", "1"]), str(path))
    assert flat("no usable events") in text and "[visitorid='x']" in text  # data quoted, not markup


def test_four_of_five_dropped_exits_2_unless_allowed(workdir) -> None:
    path = write_raw(workdir, [f"{T},1,view,1,", f"{T},x,view,1,", f"{T},2,click,1,", f"{T},3,view", f"{T},y,view,1,"])
    bad_input(runner.invoke(app, ["--quiet", "describe"]), str(path), "4 of 5 rows (80.0%)", "--max-dropped-share")
    allowed = runner.invoke(app, ["--quiet", "describe", "--max-dropped-share", "1"])
    assert allowed.exit_code == 0, allowed.output
    assert flat("4 dropped rows: non-integer visitorid 2") in flat(allowed.output)
    bad_input(runner.invoke(app, ["--quiet", "describe", "--max-dropped-share", "2"]), "max_dropped_share")


def test_unbalanced_quote_keeps_the_rest_of_the_file(workdir) -> None:
    rows = [f"{T + i * 1_000},{i},view,{i % 7}," for i in range(200)]
    rows[5] = f'{T},"4302,view,75,'
    write_raw(workdir, rows)
    result = runner.invoke(app, ["--quiet", "describe"])
    assert result.exit_code == 0, result.output
    assert flat("events 199") in flat(result.output)


def test_timestamp_units_on_the_command_line(workdir) -> None:
    write_raw(workdir, [f"{T // 1_000 + i},{i},view,{i}," for i in range(5)])
    detected = runner.invoke(app, ["--quiet", "describe"])
    assert detected.exit_code == 0, detected.output
    assert "2015-05-03" in detected.output
    assert runner.invoke(app, ["--quiet", "describe", "--timestamp-unit", "s"]).exit_code == 0
    bad_input(runner.invoke(app, ["--quiet", "describe", "--timestamp-unit", "ms"]), "5 look like seconds")
    bad_input(runner.invoke(app, ["--quiet", "describe", "--timestamp-unit", "minutes"]), "'minutes'")


def test_microsecond_timestamps_do_not_break_describe(workdir) -> None:
    write_raw(workdir, [f"{(T + i) * 1_000},{i},view,{i}," for i in range(5)])
    result = runner.invoke(app, ["--quiet", "describe"])
    assert result.exit_code == 0, result.output
    assert "2015-05-03" in result.output


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ("visitor", "'visitor' must look like role=column"),
        ("visitor=user_id,,item=sku", "'' must look like role=column"),
        ("user=user_id", "unknown role 'user'"),
        ("visitor=id,item=id", "['id'] named for more than one role"),
    ],
)
def test_bad_columns_option_exits_2_naming_it(workdir, columns, expected) -> None:
    write_raw(workdir, [f"{T},1,view,1,"])
    bad_input(runner.invoke(app, ["--quiet", "describe", "--columns", columns]), expected)


def test_unknown_string_ids_role_exits_2(workdir) -> None:
    write_raw(workdir, [f"{T},1,view,1,"])
    bad_input(runner.invoke(app, ["--quiet", "describe", "--string-ids", "visitor,event"]), "['event']")


def test_data_dir_and_events_file_together_exit_2(workdir) -> None:
    own = own_export(workdir / "own.csv")
    bad_input(runner.invoke(app, ["--quiet", "describe", "--data-dir", str(workdir), "--events-file", str(own)]),
              "not both")


# --------------------------------------------------------------------------- own data end to end


def test_describe_an_own_export(workdir) -> None:
    own = own_export(workdir / "shop-export.csv")
    result = runner.invoke(app, ["--quiet", "describe", "--events-file", str(own), *OWN_OPTIONS])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert all(flat(part) in text for part in ("events 240", "visitors 60", "items 25"))
    plain = runner.invoke(app, ["--quiet", "describe", "--data-dir", str(own)])  # a path to the file
    bad_input(plain, "missing column(s)", "--columns")


def test_train_and_evaluate_an_own_export(workdir) -> None:
    own = own_export(workdir / "shop-export.csv")
    trained = runner.invoke(app, ["--quiet", "train", "popular", "--events-file", str(own), *OWN_OPTIONS])
    assert trained.exit_code == 0, trained.output
    (run,) = (workdir / "artifacts").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["raw_dir"] == str(own.resolve())
    assert info["loader"]["string_ids"] == ["visitor", "item"]
    maps = json.loads((run / "id_maps.json").read_text())["roles"]
    assert maps["visitor"][:2] == ["u-0", "u-1"] and len(maps["item"]) == 25
    evaluated = runner.invoke(app, ["--quiet", "evaluate", "--artifacts", str(run), "--max-users", "20"])
    assert evaluated.exit_code == 0, evaluated.output  # the run's file, read with the run's options
    own.write_text("ts,user_id,action,sku\n")
    bad_input(runner.invoke(app, ["--quiet", "evaluate", "--artifacts", str(run)]), str(own), "no events")
