"""RetailRocketLoader on hostile and careless files: quotes, timestamp units, negative ids,
empty files, too many bad rows, bytes that are not UTF-8. Nothing lost, nothing crashes."""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from loguru import logger

from funnelrec.data.loaders import retailrocket
from funnelrec.data.loaders.retailrocket import DEFAULT_MAX_DROPPED_SHARE, RetailRocketLoader
from funnelrec.data.synthetic import describe, format_description
from funnelrec.errors import DataError

HEADER = "timestamp,visitorid,event,itemid,transactionid"
T = 1_430_624_917_650  # 2015-05-03 in milliseconds since the epoch
T_S = T // 1_000


def write_events(folder: Path, rows: list[str], gz: bool = False) -> Path:
    data = ("\n".join([HEADER, *rows]) + "\n").encode()
    path = folder / ("events.csv.gz" if gz else "events.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_bytes(folder: Path, rows: list[bytes]) -> Path:
    path = folder / "events.csv"
    path.write_bytes(b"\n".join([HEADER.encode(), *rows]) + b"\n")
    return path


def views(n: int, start: int = T, step: int = 1_000) -> list[str]:
    return [f"{start + i * step},{i % 97},view,{i % 50}," for i in range(n)]


@pytest.fixture
def info_logs():
    messages: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    yield messages
    logger.remove(sink)
    logger.disable("funnelrec")


# --------------------------------------------------------------------------- quotes


def test_unbalanced_quote_drops_its_row_and_keeps_the_rest(tmp_path: Path) -> None:
    rows = views(9_766)
    rows[5] = f'{T},"4302,view,75,'  # line 7, as reported
    write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == 9_765
    dropped = loader.report.to_frame()
    assert dropped["line"].tolist() == [7]
    assert dropped["reason"].tolist() == ["non-integer visitorid"]
    assert dropped["value"].tolist() == ['"4302']
    assert events["visitor_id"].iloc[-1] == (9_765 % 97)  # the last line is there


def test_quote_in_a_text_field_does_not_join_lines(tmp_path: Path) -> None:
    rows = views(40)
    rows[3] = f'{T + 3_000},3,"view,3,'
    rows[30] = f'{T + 30_000},30,view",4,'
    write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == 38
    assert loader.report.to_frame()["line"].tolist() == [5, 32]
    assert set(loader.report.counts()) == {"unknown event type"}


def test_fields_wrapped_in_quotes_are_read_without_them(tmp_path: Path) -> None:
    write_events(tmp_path, [f'"{T}","1","view","10",""', f'"{T + 1}","2"," addtocart ","11","7"'])
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert events["visitor_id"].tolist() == [1, 2]
    assert events["event"].tolist() == ["view", "addtocart"]
    assert events["transaction_id"].tolist() == [pd.NA, 7]
    assert loader.report.n_dropped == 0


# --------------------------------------------------------------------------- timestamp units


@pytest.mark.parametrize(("unit", "scale"), [("s", None), ("us", 1_000), ("ns", 1_000_000)])
def test_timestamp_unit_is_detected_per_file(tmp_path: Path, unit: str, scale, info_logs) -> None:
    in_ms = [T + 60_000 * i for i in range(5)]
    values = [v // 1_000 for v in in_ms] if scale is None else [v * scale for v in in_ms]
    write_events(tmp_path, [f"{v},{i},view,{i}," for i, v in enumerate(values)])
    events = RetailRocketLoader(tmp_path).load_events(join_categories=False)
    expected = pd.to_datetime([v // 1_000 * 1_000 if scale is None else v for v in in_ms], unit="ms", utc=True)
    assert events["timestamp"].tolist() == list(expected)
    assert events["timestamp"].iloc[0].year == 2015
    name = {"s": "seconds", "us": "microseconds", "ns": "nanoseconds"}[unit]
    assert any(name in m and "detected" in m for m in info_logs)


def test_describe_of_a_microsecond_file_prints_its_dates(tmp_path: Path) -> None:
    # read as milliseconds, these times lay beyond year 9999, where strftime failed
    write_events(tmp_path, [f"{(T + i) * 1_000},{i},view,{i}," for i in range(3)])
    text = format_description(describe(RetailRocketLoader(tmp_path).load_events()))
    assert "2015-05-03" in text


def test_column_mixing_seconds_and_milliseconds_is_refused(tmp_path: Path) -> None:
    rows = [f"{T + i * 1_000},{i},view,{i}," for i in range(20)]
    rows[4] = f"{T_S + 4},4,view,4,"  # line 6
    rows[11] = f"{T_S + 11},11,view,11,"  # line 13
    path = write_events(tmp_path, rows)
    with pytest.raises(DataError) as info:
        RetailRocketLoader(tmp_path).load_events()
    message = str(info.value)
    assert str(path) in message
    assert "'timestamp'" in message
    assert f"line 6: {T_S + 4}" in message and f"line 13: {T_S + 11}" in message
    assert "2 look like seconds" in message
    assert "Expected milliseconds" in message
    assert "timestamp_unit" in message


@pytest.mark.parametrize("bad", ["143062", "0", "17", "99999999999999999", str(4_200_000_000_000), str(T_S)])
def test_an_isolated_implausible_timestamp_drops_only_its_row(tmp_path: Path, bad: str) -> None:
    # a truncated value, garbage, or one lone value that looks like another unit
    rows = views(10)
    rows[2] = f"{bad},2,view,2,"  # line 4
    write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == 9 and events["timestamp"].dt.year.eq(2015).all()
    dropped = loader.report.to_frame()
    assert dropped[["line", "reason", "column", "value"]].values.tolist() == [
        [4, "implausible timestamp", "timestamp", bad]
    ]
    with pytest.raises(DataError, match=f"line 4: implausible timestamp \\[timestamp='{bad}'\\]"):
        RetailRocketLoader(tmp_path, strict=True).load_events()


def test_many_implausible_timestamps_refuse_the_file(tmp_path: Path) -> None:
    rows = views(10)
    for i, bad in ((2, "0"), (5, "143062"), (7, "17")):
        rows[i] = f"{bad},{i},view,{i},"
    write_events(tmp_path, rows)
    with pytest.raises(DataError, match="3 of 10 rows") as info:
        RetailRocketLoader(tmp_path).load_events()
    message = str(info.value)
    assert "implausible timestamp: 3" in message
    assert "line 4: 0" in message and "line 7: 143062" in message  # the hint shows the values
    assert len(RetailRocketLoader(tmp_path, max_dropped_share=0.5).load_events(join_categories=False)) == 7


def test_one_percent_of_values_in_another_unit_is_a_mixed_column(tmp_path: Path) -> None:
    rows = views(200)
    rows[50] = f"{T_S + 50},50,view,50,"  # line 52: one value looks like seconds, a damaged row
    write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    assert len(loader.load_events(join_categories=False)) == 199
    assert loader.report.counts() == {"implausible timestamp": 1}
    rows[120] = f"{T_S + 120},20,view,20,"  # line 122: two of 200 (1%) are a second unit
    write_events(tmp_path, rows)
    with pytest.raises(DataError, match="mixes timestamp units") as info:
        RetailRocketLoader(tmp_path).load_events()
    assert "line 52" in str(info.value) and "line 122" in str(info.value)


def test_explicit_unit_converts_and_checks(tmp_path: Path) -> None:
    write_events(tmp_path, [f"{T_S + i},{i},view,{i}," for i in range(3)])
    events = RetailRocketLoader(tmp_path, timestamp_unit="s").load_events(join_categories=False)
    assert events["timestamp"].iloc[0] == pd.Timestamp(T_S, unit="s", tz="UTC")
    with pytest.raises(DataError) as info:
        RetailRocketLoader(tmp_path, timestamp_unit="ms").load_events()
    assert "3 of 3 values" in str(info.value)
    assert "3 look like seconds" in str(info.value)
    assert "timestamp_unit='ms'" in str(info.value)


def test_unknown_timestamp_unit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="timestamp_unit.*'minutes'"):
        RetailRocketLoader(tmp_path, timestamp_unit="minutes")


def test_property_file_unit_detected_on_its_own(tmp_path: Path) -> None:
    write_events(tmp_path, [f"{T},1,view,10,"])
    props = "timestamp,itemid,property,value\n"
    (tmp_path / "item_properties_part1.csv").write_text(props + f"{T_S},10,categoryid,3\n")
    (tmp_path / "item_properties_part2.csv").write_text(props + f"{T_S + 5},10,categoryid,4\n")
    loader = RetailRocketLoader(tmp_path)
    assert loader.load_events()["category_id"].tolist() == [4]
    properties = loader.load_item_properties()
    assert properties["timestamp"].tolist() == [pd.Timestamp(T_S, unit="s", tz="UTC"),
                                                pd.Timestamp(T_S + 5, unit="s", tz="UTC")]


# --------------------------------------------------------------------------- negative ids


def test_negative_ids_are_dropped_and_reported(tmp_path: Path) -> None:
    rows = views(40)
    rows[1] = f"{T + 1_000},-5,view,3,"  # line 3
    rows[2] = f"{T + 2_000},5,view,-1,"  # line 4
    rows[3] = f"{T + 3_000},5,transaction,4,-3"  # line 5
    path = write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == 37
    assert (events[["visitor_id", "item_id"]].to_numpy() >= 0).all()
    dropped = loader.report.to_frame()
    assert dropped[["line", "reason", "column", "value"]].values.tolist() == [
        [3, "negative visitorid", "visitorid", "-5"],
        [4, "negative itemid", "itemid", "-1"],
        [5, "negative transactionid", "transactionid", "-3"],
    ]
    assert set(dropped["file"]) == {str(path)}


def test_negative_category_ids_are_dropped(tmp_path: Path) -> None:
    write_events(tmp_path, [f"{T},1,view,10,", f"{T + 1},1,view,11,"])
    props = "timestamp,itemid,property,value\n"
    (tmp_path / "item_properties_part1.csv").write_text(props + f"{T},10,categoryid,-2\n{T},11,categoryid,5\n")
    (tmp_path / "item_properties_part2.csv").write_text(props + f"{T - 1},10,categoryid,7\n")
    (tmp_path / "category_tree.csv").write_text("categoryid,parentid\n5,7\n-1,5\n7,-4\n7,\n")
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    events = loader.load_events()
    assert dict(zip(events["item_id"], events["category_id"], strict=True)) == {10: 7, 11: 5}
    tree = loader.load_category_tree()
    assert tree["category_id"].tolist() == [5, 7]
    reasons = loader.report.to_frame().set_index("line")["reason"]
    assert reasons.tolist() == ["negative categoryid value", "negative categoryid", "negative parentid"]


# --------------------------------------------------------------------------- empty, too many dropped


@pytest.mark.parametrize("newline", ["\n", ""])
def test_header_only_file_is_an_error_naming_it(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + newline)
    with pytest.raises(DataError, match="no events") as info:
        RetailRocketLoader(tmp_path).load_events()
    assert str(path) in str(info.value)


def test_every_row_dropped_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_events(tmp_path, [f"{T},x,view,1,", f"{T},1,click,1,"])
    with pytest.raises(DataError) as info:
        RetailRocketLoader(tmp_path, max_dropped_share=1.0).load_events()
    message = str(info.value)
    assert str(path) in message and "no usable events" in message
    assert "line 2" in message and "line 3" in message


def test_more_dropped_than_the_share_allows_is_an_error(tmp_path: Path) -> None:
    rows = [f"{T},1,view,1,", f"{T},x,view,1,", f"{T},2,click,1,", f"{T},3,view", f"{T},y,view,1,"]
    path = write_events(tmp_path, rows)  # 4 of 5 rows dropped
    with pytest.raises(DataError) as info:
        RetailRocketLoader(tmp_path).load_events()
    message = str(info.value)
    assert str(path) in message
    assert "4 of 5 rows (80.0%)" in message and "max_dropped_share=0.1" in message
    assert "unknown event type: 1" in message and "line 5" in message
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    assert len(loader.load_events()) == 1
    assert loader.report.n_dropped == 4


def test_a_few_bad_rows_load_under_the_default_share(tmp_path: Path) -> None:
    rows = views(100)
    for i in range(0, 100, 20):
        rows[i] = f"{T},bad,view,1,"  # 5% of the rows
    write_events(tmp_path, rows)
    assert DEFAULT_MAX_DROPPED_SHARE == 0.1
    assert len(RetailRocketLoader(tmp_path).load_events()) == 95


def test_duplicates_do_not_count_as_dropped(tmp_path: Path) -> None:
    write_events(tmp_path, views(10) * 3)
    loader = RetailRocketLoader(tmp_path, max_dropped_share=0.0)
    assert len(loader.load_events()) == 10
    assert loader.report.counts() == {"duplicate row": 20}


def test_max_dropped_share_must_be_a_share(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="max_dropped_share"):
        RetailRocketLoader(tmp_path, max_dropped_share=1.5)


def test_text_ids_hint_when_most_ids_are_text(tmp_path: Path) -> None:
    write_events(tmp_path, [f"{T + i},user-{i},view,{i}," for i in range(10)])
    with pytest.raises(DataError, match=r"string_ids=\['visitor'\].*--string-ids visitor"):
        RetailRocketLoader(tmp_path).load_events()


# --------------------------------------------------------------------------- not UTF-8


def test_one_byte_that_is_not_utf8_drops_only_its_row(tmp_path: Path) -> None:
    rows = [r.encode() for r in views(50)]
    rows[9] = f"{T + 9_000},9,vi".encode() + b"\xe9w,9,"  # line 11, in a text field
    rows[20] = f"{T + 20_000},20,view,2".encode() + b"\xff,"  # line 22, in an integer field
    write_bytes(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == 48
    dropped = loader.report.to_frame()
    assert dropped["line"].tolist() == [11, 22]
    assert dropped["reason"].tolist() == ["not UTF-8", "not UTF-8"]
    assert dropped["text"].iloc[0] == f"{T + 9_000},9,vi\ufffdw,9,"


def test_not_utf8_in_a_row_with_the_wrong_field_count(tmp_path: Path) -> None:
    # pyarrow cannot even hand such a row to an invalid-row handler
    rows = [r.encode() for r in views(30)]
    rows[4] = f"{T},4,vi".encode() + b"\xe9w"  # line 6
    write_bytes(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path)
    assert len(loader.load_events(join_categories=False)) == 29
    assert loader.report.to_frame()[["line", "reason"]].values.tolist() == [[6, "not UTF-8"]]


def test_not_utf8_in_a_gzipped_file(tmp_path: Path) -> None:
    rows = [r.encode() for r in views(30)]
    rows[0] = rows[0].replace(b"view", b"v\xc3ew")
    (tmp_path / "events.csv.gz").write_bytes(gzip.compress(b"\n".join([HEADER.encode(), *rows]) + b"\n"))
    loader = RetailRocketLoader(tmp_path)
    assert len(loader.load_events(join_categories=False)) == 29
    assert loader.report.to_frame()["line"].tolist() == [2]


def test_latin1_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    rows = [f"{T + i},{i},vi\xe9w,{i},".encode("latin-1") for i in range(10)]
    write_bytes(tmp_path, rows)
    with pytest.raises(DataError, match="not UTF-8: 10") as info:
        RetailRocketLoader(tmp_path).load_events()
    assert "re-encode the file as UTF-8" in str(info.value)


def test_utf8_text_is_not_mistaken_for_bad_bytes(tmp_path: Path) -> None:
    rows = [f"{T + i},kunde-\u00fc{i % 3},view,{i}," for i in range(12)]
    rows[5] = f"{T},x,view"  # forces the careful path
    write_events(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path, string_ids=["visitor"], max_dropped_share=0.5)
    assert len(loader.load_events(join_categories=False)) == 11
    assert loader.id_maps["visitor"].tolist() == ["kunde-\u00fc0", "kunde-\u00fc1", "kunde-\u00fc2"]
    assert loader.report.counts() == {"wrong field count": 1}


def test_utf8_sequences_cut_by_decode_chunks_are_not_errors(monkeypatch) -> None:
    monkeypatch.setattr(retailrocket, "_DECODE_CHUNK", 5)
    text = "a\u00e9\u20ac\U0001f600b,\u00fc\n" * 7
    fixed, lines = retailrocket._replace_invalid_utf8(text.encode())
    assert fixed == text.encode() and lines.tolist() == []
    raw = text.encode() + b"x\xffy\xc3\n" + text.encode()
    fixed, lines = retailrocket._replace_invalid_utf8(raw)
    assert lines.tolist() == [8]  # the two bad sequences of line 8, once
    assert fixed.decode() == text + "x\ufffdy\ufffd\n" + text


def test_a_replacement_character_in_the_file_is_valid_text(monkeypatch) -> None:
    monkeypatch.setattr(retailrocket, "_DECODE_CHUNK", 8)
    raw = "ok \ufffd\n".encode() + b"bad \xef\xef\xbf\xbd\n" + "\ufffd\ufffd\n".encode() + b"\xe9"
    fixed, lines = retailrocket._replace_invalid_utf8(raw)
    assert lines.tolist() == [2, 4]  # the lone 0xEF and the last line's 0xE9; not lines 1 and 3
    assert fixed.decode() == "ok \ufffd\nbad \ufffd\ufffd\n\ufffd\ufffd\n\ufffd"


def test_a_latin1_file_with_accents_on_every_row_is_reported_row_by_row(tmp_path: Path, monkeypatch) -> None:
    """Every other row of a large Latin-1 export has a bad byte: each is found, decoding the
    file twice (decoding the rest of the chunk again after each bad byte is quadratic:
    minutes for such a file)."""
    decoded: list[int] = []
    real_decode = codecs.utf_8_decode

    def counting_decode(data, *args):
        decoded.append(len(data))
        return real_decode(data, *args)

    monkeypatch.setattr(codecs, "utf_8_decode", counting_decode)
    n = 20_000
    rows = [f"{T + i},{i % 97},view,{i % 50},".encode() for i in range(n)]
    bad = np.arange(0, n, 2)
    for i in bad:
        rows[i] = f"{T + i},{i % 97},vi\xe9w,{i % 50},".encode("latin-1")
    rows[1] = f"{T + 1},1,view,1".encode()  # a wrong field count forces the careful path too
    write_bytes(tmp_path, rows)
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    events = loader.load_events(join_categories=False)
    dropped = loader.report.to_frame()
    assert loader.report.counts() == {"not UTF-8": len(bad), "wrong field count": 1}
    assert dropped.loc[dropped["reason"] == "not UTF-8", "line"].tolist() == (bad + 2).tolist()
    assert dropped["text"].iloc[0] == f"{T},0,vi\ufffdw,0,"
    assert len(events) == n - len(bad) - 1
    assert sum(decoded) <= 3 * (tmp_path / "events.csv").stat().st_size  # the header, the file twice
