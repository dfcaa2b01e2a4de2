"""RetailRocketLoader on small hand-written files in the Kaggle format, and on real samples."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from loguru import logger

from funnelrec.data.loaders.retailrocket import LoadReport, RetailRocketLoader
from funnelrec.data.schema import CANONICAL_DTYPES, EVENT_DTYPE, validate_events

EVENTS_HEADER = "timestamp,visitorid,event,itemid,transactionid"
PROPS_HEADER = "timestamp,itemid,property,value"
T = 1_433_221_300_000  # 2015-06-02 in milliseconds since the epoch, RetailRocket's unit
CANONICAL = ["timestamp", "visitor_id", "event", "item_id", "transaction_id", "category_id"]


def write(folder: Path, name: str, lines: list[str], gz: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    path = folder / (name + (".gz" if gz else ""))
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_properties(folder: Path, part1: list[str], part2: list[str], gz: bool = False) -> None:
    write(folder, "item_properties_part1.csv", [PROPS_HEADER, *part1], gz=gz)
    write(folder, "item_properties_part2.csv", [PROPS_HEADER, *part2], gz=gz)


@pytest.fixture
def logs():
    """Messages funnelrec logs through loguru (the library logger is disabled by default)."""
    messages: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)
    logger.disable("funnelrec")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A clean RetailRocket folder: 5 events, properties with a category change, a tree."""
    write(
        tmp_path,
        "events.csv",
        [
            EVENTS_HEADER,
            "1433221332117,257597,view,355908,",
            "1433224214164,992329,view,248676,",
            "1433221999827,111016,addtocart,318965,",
            "1433221332117,483717,view,253185,",  # same time as line 2: stays after it
            "1433223236124,287857,transaction,5206,4000",
        ],
    )
    write_properties(
        tmp_path,
        [
            "1435460400000,355908,categoryid,1173",
            "1441508400000,355908,categoryid,1338",  # later: wins
            "1439089200000,355908,available,1",
            "1431226800000,248676,categoryid,491",
        ],
        [
            "1433041200000,318965,categoryid,28",
            "1433041200000,318965,790,n5000.000",
        ],
    )
    write(tmp_path, "category_tree.csv", ["categoryid,parentid", "1016,213", "213,", "1338,1016"])
    return tmp_path


# --------------------------------------------------------------------------- clean files


def test_events_have_canonical_names_and_dtypes(shop: Path) -> None:
    events = RetailRocketLoader(shop).load_events()
    assert list(events.columns) == CANONICAL
    for column in CANONICAL:
        assert events[column].dtype == CANONICAL_DTYPES[column], column
    assert str(events["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert events["event"].dtype == EVENT_DTYPE
    assert events["transaction_id"].tolist() == [pd.NA, pd.NA, pd.NA, 4000, pd.NA]
    assert events.index.equals(pd.RangeIndex(5))
    validate_events(events)


def test_events_sorted_by_timestamp_stably(shop: Path) -> None:
    events = RetailRocketLoader(shop).load_events(join_categories=False)
    assert events["timestamp"].is_monotonic_increasing
    assert events["visitor_id"].tolist() == [257597, 483717, 111016, 287857, 992329]
    assert events["timestamp"].iloc[0] == pd.Timestamp(1433221332117, unit="ms", tz="UTC")
    assert "category_id" not in events.columns


def test_latest_category_per_item_wins(shop: Path) -> None:
    cats = RetailRocketLoader(shop).load_item_categories()
    assert list(cats.columns) == ["item_id", "category_id"]
    assert cats["item_id"].dtype == np.int64
    assert cats["category_id"].dtype == pd.Int64Dtype()
    got = dict(zip(cats["item_id"], cats["category_id"], strict=True))
    assert got == {355908: 1338, 248676: 491, 318965: 28}


def test_latest_category_does_not_depend_on_file_order(tmp_path: Path) -> None:
    write_properties(
        tmp_path,
        [f"{T + 200},7,categoryid,2", f"{T + 100},7,categoryid,1"],
        [f"{T + 50},7,categoryid,0", f"{T + 300},8,categoryid,5", f"{T + 250},8,categoryid,4"],
    )
    cats = RetailRocketLoader(tmp_path).load_item_categories()
    assert dict(zip(cats["item_id"], cats["category_id"], strict=True)) == {7: 2, 8: 5}


def test_categories_joined_onto_events_na_for_unknown_items(shop: Path) -> None:
    events = RetailRocketLoader(shop).load_events()
    by_item = dict(zip(events["item_id"], events["category_id"], strict=True))
    assert by_item[355908] == 1338
    assert by_item[248676] == 491
    assert by_item[318965] == 28
    assert by_item[253185] is pd.NA
    assert by_item[5206] is pd.NA


def test_item_properties_concatenated(shop: Path) -> None:
    props = RetailRocketLoader(shop).load_item_properties()
    assert list(props.columns) == ["timestamp", "item_id", "property", "value"]
    assert len(props) == 6
    assert str(props["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert props["item_id"].dtype == np.int64
    assert props["value"].tolist()[-1] == "n5000.000"
    assert props["property"].tolist()[2] == "available"


def test_category_tree(shop: Path) -> None:
    tree = RetailRocketLoader(shop).load_category_tree()
    assert list(tree.columns) == ["category_id", "parent_id"]
    assert tree["category_id"].dtype == pd.Int64Dtype()
    assert tree["parent_id"].dtype == pd.Int64Dtype()
    assert tree["parent_id"].isna().tolist() == [False, True, False]


def test_gzip_files(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 2},1,view,10,", f"{T + 1},1,addtocart,10,"], gz=True)
    write_properties(tmp_path, [f"{T + 1},10,categoryid,3"], [], gz=True)
    events = RetailRocketLoader(tmp_path).load_events()
    assert events["event"].tolist() == ["addtocart", "view"]
    assert events["category_id"].tolist() == [3, 3]


def test_plain_file_preferred_over_gzip(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,"])
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},2,view,20,", f"{T + 2},2,view,21,"], gz=True)
    events = RetailRocketLoader(tmp_path).load_events(join_categories=False)
    assert events["visitor_id"].tolist() == [1]


def test_missing_property_files_give_na_categories(tmp_path: Path, logs: list[str]) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,", f"{T + 2},1,view,11,"])
    events = RetailRocketLoader(tmp_path).load_events()
    assert events["category_id"].dtype == pd.Int64Dtype()
    assert events["category_id"].isna().all()
    assert any("item_properties_part1.csv" in m and "<NA>" in m for m in logs)




def test_default_folder_comes_from_settings(tmp_path: Path, monkeypatch) -> None:
    from funnelrec.config import settings

    monkeypatch.setattr(settings, "data_dir", tmp_path)
    assert RetailRocketLoader().data_dir == tmp_path / "raw"


def test_extra_columns_and_quoted_header_are_accepted(tmp_path: Path) -> None:
    header = '"timestamp","visitorid","event","itemid","transactionid","extra"'
    write(tmp_path, "events.csv", [header, f"{T + 1},1,view,10,,x", f"{T + 2},1,view,11,,y"])
    events = RetailRocketLoader(tmp_path).load_events(join_categories=False)
    assert list(events.columns) == CANONICAL[:-1]
    assert len(events) == 2


# --------------------------------------------------------------------------- bad input


def test_missing_file_names_path_and_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        RetailRocketLoader(tmp_path).load_events()
    message = str(info.value)
    assert str(tmp_path / "events.csv") in message
    assert "funnelrec generate" in message
    assert "retailrocket/ecommerce-dataset" in message


def test_one_missing_property_part_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,"])
    write(tmp_path, "item_properties_part1.csv", [PROPS_HEADER, f"{T + 1},10,categoryid,3"])
    with pytest.raises(FileNotFoundError, match="item_properties_part2.csv"):
        RetailRocketLoader(tmp_path).load_events()


def test_missing_column_is_named(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", ["timestamp,visitorid,event,transactionid", f"{T + 1},1,view,"])
    with pytest.raises(ValueError) as info:
        RetailRocketLoader(tmp_path).load_events()
    message = str(info.value)
    assert "events.csv" in message
    assert "['itemid']" in message
    assert "visitorid" in message  # the columns the file does have


MALFORMED = [
    EVENTS_HEADER,  # line 1
    f"{T + 1000},1,view,10,",  # 2 ok
    f"{T + 1001},abc,view,11,",  # 3 non-integer visitorid
    f"{T + 1002},2,view",  # 4 wrong field count
    f"{T + 1003},3,click,12,",  # 5 unknown event type
    f"{T + 1004},4,transaction,13,x9",  # 6 non-integer transactionid
    "",  # 7 empty line
    f"{T + 1005},5,addtocart,14.5,",  # 8 non-integer itemid
    f"{T + 1006},6,transaction,15,77",  # 9 ok
    "17x,7,view,16,",  # 10 non-integer timestamp
    f"{T + 1007},7,view,,",  # 11 missing itemid
    f"{T + 1008},8,view,17,",  # 12 ok
]


def test_malformed_rows_skipped_with_line_numbers(tmp_path: Path, logs: list[str]) -> None:
    write(tmp_path, "events.csv", MALFORMED)
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    events = loader.load_events(join_categories=False)

    assert events["visitor_id"].tolist() == [1, 6, 8]
    assert events["item_id"].tolist() == [10, 15, 17]
    assert events["event"].tolist() == ["view", "transaction", "view"]
    assert events["transaction_id"].tolist() == [pd.NA, 77, pd.NA]
    validate_events(events)

    dropped = loader.report.to_frame()
    got = dict(zip(dropped["line"], dropped["reason"], strict=True))
    assert got == {
        3: "non-integer visitorid",
        4: "wrong field count",
        5: "unknown event type",
        6: "non-integer transactionid",
        7: "empty row",
        8: "non-integer itemid",
        10: "non-integer timestamp",
        11: "missing itemid",
    }
    row = dropped.set_index("line").loc[5]
    assert row["value"] == "click"
    assert row["text"] == f"{T + 1003},3,click,12,"
    assert row["file"] == str(tmp_path / "events.csv")
    assert dropped.set_index("line").loc[4, "text"] == f"{T + 1002},2,view"
    assert dropped.set_index("line").loc[6, "value"] == "x9"

    entry = loader.report.files[str(tmp_path / "events.csv")]
    assert entry.rows_read == 11
    assert entry.rows_returned == 3
    assert loader.report.n_dropped == 8
    assert loader.report.counts()["unknown event type"] == 1
    summary = loader.report.summary()
    assert "line 5" in summary and "click" in summary
    assert any("dropped 8 of 11 rows" in m for m in logs)


def test_typed_path_reports_missing_values_and_unknown_events(tmp_path: Path) -> None:
    # No conversion failure and no field-count problem: the fast path must still catch these.
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,", f"{T + 2},,view,11,", f"{T + 3},3,click,12,"])
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    events = loader.load_events(join_categories=False)
    assert events["visitor_id"].tolist() == [1]
    dropped = loader.report.to_frame()
    assert dropped["line"].tolist() == [3, 4]
    assert dropped["reason"].tolist() == ["missing visitorid", "unknown event type"]


def test_line_numbers_hold_across_parse_blocks(tmp_path: Path) -> None:
    # Big enough for pyarrow to read in several blocks and threads.
    n = 150_000
    rows = [f"{T + 1000 + i},{i},view,{i % 977}," for i in range(n)]
    rows[70_000] = f"{T + 5},5,view"  # line 70_002
    rows[120_000] = "oops,5,view,1,"  # line 120_002
    rows[149_000] = f"{T + 9},9,view,9,9,9"  # line 149_002
    write(tmp_path, "events.csv", [EVENTS_HEADER, *rows])
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events(join_categories=False)
    assert len(events) == n - 3
    dropped = loader.report.to_frame()
    assert dropped["line"].tolist() == [70_002, 120_002, 149_002]
    assert dropped["text"].tolist() == [f"{T + 5},5,view", "oops,5,view,1,", f"{T + 9},9,view,9,9,9"]


def test_strict_mode_raises_with_line_numbers(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", MALFORMED)
    loader = RetailRocketLoader(tmp_path, strict=True)
    with pytest.raises(ValueError) as info:
        loader.load_events()
    message = str(info.value)
    assert "events.csv" in message
    assert "line 3" in message and "abc" in message
    assert "line 4" in message
    assert "and 3 more" in message  # only the first few are listed
    assert loader.report.n_dropped == 8  # the report is still filled


def test_strict_mode_accepts_clean_files_with_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,", f"{T + 1},1,view,10,"])
    events = RetailRocketLoader(tmp_path, strict=True).load_events()
    assert len(events) == 1


def test_duplicates_dropped_and_counted(tmp_path: Path, logs: list[str]) -> None:
    write(
        tmp_path,
        "events.csv",
        [
            EVENTS_HEADER,
            f"{T + 1},1,view,10,",
            f"{T + 2},1,view,10,",  # same visitor and item, another time: kept
            f"{T + 1},1,view,10,",  # duplicate of line 2
            f"{T + 3},2,transaction,11,5",
            f"{T + 3},2,transaction,11,5",  # duplicate of line 5
            f"{T + 1},1,view,10,",  # duplicate of line 2
        ],
    )
    loader = RetailRocketLoader(tmp_path)
    events = loader.load_events()
    assert len(events) == 3
    dropped = loader.report.to_frame()
    assert dropped["reason"].unique().tolist() == ["duplicate row"]
    assert dropped["line"].tolist() == [4, 6, 7]
    assert loader.report.counts() == {"duplicate row": 3}
    assert any("duplicate row: 3" in m for m in logs)


def test_bad_categoryid_value_reported_and_older_value_used(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,"])
    write_properties(tmp_path, [f"{T + 1},10,categoryid,3", f"{T + 5},10,categoryid,n3.000"], [f"{T + 2},10,888,x"])
    loader = RetailRocketLoader(tmp_path, max_dropped_share=1.0)
    assert loader.load_events()["category_id"].tolist() == [3]
    dropped = loader.report.to_frame()
    assert dropped["line"].tolist() == [3]
    assert dropped["reason"].tolist() == ["non-integer categoryid value"]
    assert dropped["file"].tolist() == [str(tmp_path / "item_properties_part1.csv")]


def test_report_entry_replaced_on_reload(tmp_path: Path) -> None:
    write(tmp_path, "events.csv", [EVENTS_HEADER, f"{T + 1},1,view,10,", f"{T + 1},1,view,10,"])
    loader = RetailRocketLoader(tmp_path)
    loader.load_events()
    loader.load_events()
    assert loader.report.n_dropped == 1
    assert isinstance(loader.report, LoadReport)
    assert list(loader.report.to_frame().columns) == [
        "file",
        "line",
        "reason",
        "column",
        "value",
        "text",
    ]
    assert "1 dropped" in str(loader.report)


def test_empty_report() -> None:
    report = LoadReport()
    assert report.n_dropped == 0
    assert report.to_frame().empty
    assert "No RetailRocket files" in report.summary()


# --------------------------------------------------------------------------- real samples


@pytest.mark.realdata
def test_real_head100(shared_data_dir: Path) -> None:
    folder = shared_data_dir / "retailrocket-head100"
    if not (folder / "events.csv").is_file():
        pytest.skip(f"{folder / 'events.csv'} not found")
    loader = RetailRocketLoader(folder, strict=True)
    events = loader.load_events()
    assert len(events) == 100
    assert events["event"].value_counts().to_dict() == {
        "view": 96,
        "addtocart": 3,
        "transaction": 1,
    }
    # As published, the one transaction row of the head has an empty transactionid.
    assert events["transaction_id"].isna().all()
    assert events["category_id"].isna().all()  # the sample has no property files
    assert events["timestamp"].is_monotonic_increasing
    assert loader.report.n_dropped == 0


@pytest.mark.realdata
def test_real_views_10k(shared_data_dir: Path) -> None:
    folder = shared_data_dir / "retailrocket-views-10k"
    if not (folder / "events.csv").is_file():
        pytest.skip(f"{folder / 'events.csv'} not found")
    loader = RetailRocketLoader(folder)
    events = loader.load_events()
    # Timestamps were rounded to seconds, so 17 repeat views became exact duplicates.
    entry = loader.report.files[str(folder / "events.csv")]
    assert entry.rows_read == 10_080
    assert loader.report.counts() == {"duplicate row": 17}
    assert len(events) == 10_080 - 17
    assert (events["event"] == "view").all()
    assert events["visitor_id"].nunique() == 2_496
    assert events["item_id"].nunique() == 5_566
    assert events["category_id"].isna().all()
    tree = loader.load_category_tree()
    assert len(tree) == 1_669
    assert int(tree["parent_id"].isna().sum()) == 25
