"""Your own data: other file and column names, no transaction column, text ids, frames with
ordinary dtypes. The library and the pipeline load them and train on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from loguru import logger

from funnelrec.data.loaders.retailrocket import (
    RetailRocketLoader,
    load_id_maps,
    save_id_maps,
)
from funnelrec.data.schema import CANONICAL_DTYPES, SchemaError, to_canonical, validate_events
from funnelrec.errors import DataError

T = 1_430_624_917_650  # 2015-05-03 in milliseconds since the epoch
OWN_COLUMNS = {"visitor": "user_id", "item": "sku", "timestamp": "ts", "event": "action",
               "transaction": "order_id"}


@pytest.fixture
def warnings_logged():
    messages: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)
    logger.disable("funnelrec")


def own_csv(path: Path, *, seed: int = 5) -> pd.DataFrame:
    """The tiny synthetic shop as a shop's own export: other names, seconds, text ids, extra column."""
    from funnelrec.data.synthetic import generate

    raw = generate("tiny", seed=seed).events
    own = pd.DataFrame({
        "user_id": "u-" + raw["visitorid"].astype(str),
        "action": raw["event"].astype(str).str.upper(),
        "sku": "sku-" + raw["itemid"].astype(str),
        "ts": raw["timestamp"] // 1_000,
        "channel": "web",
    })
    own.to_csv(path, index=False)
    return raw


# --------------------------------------------------------------------------- files and columns


def test_file_without_transaction_column_loads(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(f"timestamp,visitorid,event,itemid\n{T},1,view,10\n{T + 1},1,transaction,10\n")
    events = RetailRocketLoader(tmp_path).load_events(join_categories=False)
    assert events["transaction_id"].dtype == pd.Int64Dtype()
    assert events["transaction_id"].isna().all()
    assert len(events) == 2
    validate_events(events)


def test_columns_are_mapped_by_role(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(
        "sku,ts,user_id,action,order_id\n"
        f"10,{T},1,view,\n11,{T + 5},2,transaction,99\n"
    )
    loader = RetailRocketLoader(tmp_path, events_file="orders.csv", columns=OWN_COLUMNS)
    events = loader.load_events(join_categories=False)
    assert list(events.columns) == ["timestamp", "visitor_id", "event", "item_id", "transaction_id"]
    assert events["visitor_id"].tolist() == [1, 2]
    assert events["item_id"].tolist() == [10, 11]
    assert events["transaction_id"].tolist() == [pd.NA, 99]
    for column in events.columns:
        assert events[column].dtype == CANONICAL_DTYPES[column], column
    assert "columns=" in repr(loader) and "orders.csv" in repr(loader)


def test_bad_rows_are_reported_under_the_files_own_column_names(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(f"ts,user_id,action,sku\n{T},1,view,10\n{T},1,view,x\n"
                                   + "".join(f"{T + i},2,view,11\n" for i in range(20)))
    loader = RetailRocketLoader(tmp_path / "e.csv", columns=OWN_COLUMNS | {"transaction": "transactionid"})
    loader.load_events(join_categories=False)
    assert loader.report.to_frame()[["line", "reason", "column"]].values.tolist() == [[3, "non-integer sku", "sku"]]


def test_a_mapped_column_the_file_lacks_is_named(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(f"ts,visitorid,event,itemid\n{T},1,view,10\n")
    with pytest.raises(DataError) as info:
        RetailRocketLoader(tmp_path, columns={"timestamp": "ts", "transaction": "order_id"}).load_events()
    assert "['order_id']" in str(info.value) and "--columns" in str(info.value)


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"user": "user_id"}, r"unknown role\(s\) \['user'\].*visitor"),
        ({"visitor": " "}, r"\['visitor'\] need a column name"),
        ({"visitor": "id", "item": "id"}, r"\['id'\] named for more than one role"),
    ],
)
def test_bad_column_mapping_is_refused(tmp_path: Path, columns, match) -> None:
    with pytest.raises(DataError, match=match):
        RetailRocketLoader(tmp_path, columns=columns)


def test_a_path_to_a_file_is_the_events_file(tmp_path: Path) -> None:
    path = tmp_path / "export-2024.csv"
    path.write_text(f"timestamp,visitorid,event,itemid\n{T},1,view,10\n")
    loader = RetailRocketLoader(path)
    assert loader.data_dir == tmp_path
    assert len(loader.load_events(join_categories=False)) == 1
    with pytest.raises(DataError, match="once"):
        RetailRocketLoader(path, events_file="other.csv")


def test_a_missing_events_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="orders.csv"):
        RetailRocketLoader(tmp_path, events_file="orders.csv").load_events()


# --------------------------------------------------------------------------- text ids


def test_text_ids_become_dense_codes_with_a_persisted_map(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        f"{T},bob,view,sku-B,\n{T + 1},alice,view,sku-A,\n{T + 2},bob,transaction,sku-A,ord-9\n"
    )
    loader = RetailRocketLoader(tmp_path, string_ids=["visitor", "item", "transaction"])
    events = loader.load_events(join_categories=False)
    validate_events(events)
    assert events["visitor_id"].tolist() == [1, 0, 1]  # codes in sorted text order
    assert events["item_id"].tolist() == [1, 0, 0]
    assert events["transaction_id"].tolist() == [pd.NA, pd.NA, 0]
    assert loader.id_maps["visitor"].tolist() == ["alice", "bob"]
    assert loader.id_maps["item"][events["item_id"]].tolist() == ["sku-B", "sku-A", "sku-A"]
    path = save_id_maps(loader.id_maps, tmp_path)
    assert path == tmp_path / "id_maps.json"
    again = load_id_maps(tmp_path)
    assert {r: m.tolist() for r, m in again.items()} == {r: m.tolist() for r, m in loader.id_maps.items()}
    assert save_id_maps({}, tmp_path / "none.json") is None


def test_unknown_text_id_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"string_ids.*\['event'\]"):
        RetailRocketLoader(tmp_path, string_ids=["event"])


def test_text_item_ids_skip_the_integer_property_files(tmp_path: Path, warnings_logged) -> None:
    (tmp_path / "events.csv").write_text(f"timestamp,visitorid,event,itemid\n{T},1,view,sku-1\n")
    for part in ("item_properties_part1.csv", "item_properties_part2.csv"):
        (tmp_path / part).write_text(f"timestamp,itemid,property,value\n{T},1,categoryid,3\n")
    events = RetailRocketLoader(tmp_path, string_ids=["item"]).load_events()
    assert events["category_id"].isna().all()
    assert any("text" in m and "category_id is <NA>" in m for m in warnings_logged)


def test_own_export_loads_and_trains(tmp_path: Path) -> None:
    from funnelrec.models import PopularItemsRecommender
    from funnelrec.pipeline import prepare_data

    raw = own_csv(tmp_path / "shop.csv")
    options = {"columns": {"visitor": "user_id", "item": "sku", "timestamp": "ts", "event": "action"},
               "string_ids": ["visitor", "item"]}
    data = prepare_data(tmp_path / "shop.csv", loader_options=options)
    assert len(data.events) == len(raw.drop_duplicates(["visitorid", "itemid", "event", "timestamp"]))
    assert data.events["timestamp"].iloc[0].year == 2015  # seconds detected
    assert data.id_maps["visitor"].str.startswith("u-").all()
    assert len(data.id_maps["item"]) == raw["itemid"].nunique()
    model = PopularItemsRecommender().fit(data.train)
    recs = model.recommend(int(data.train["visitor_id"].iloc[0]), n_items=3)
    assert len(recs.item_ids) == 3
    skus = data.id_maps["item"][np.asarray(recs.item_ids)]
    assert skus.str.startswith("sku-").all()


# --------------------------------------------------------------------------- frames


def ordinary_frame() -> pd.DataFrame:
    """What a pandas user has at hand: naive times, text events, text and int32 ids."""
    return pd.DataFrame({
        "timestamp": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 10:05", "2024-03-02 09:00"]),
        "visitor_id": ["17", "17", "23"],
        "event": ["view", "addtocart", "view"],
        "item_id": np.array([5, 5, 6], dtype=np.int32),
    })


def test_validate_events_lists_every_problem_and_says_how_to_fix_them() -> None:
    with pytest.raises(SchemaError) as info:
        validate_events(ordinary_frame(), name="train events")
    message = str(info.value)
    for column in ("timestamp", "visitor_id", "event", "item_id"):
        assert f"['{column}']" in message
    assert "to_canonical" in message


def test_to_canonical_casts_an_ordinary_frame_that_models_fit_on() -> None:
    from funnelrec.models import PopularItemsRecommender

    events = to_canonical(ordinary_frame())
    assert validate_events(events) is events
    assert events["timestamp"].iloc[0] == pd.Timestamp("2024-03-01 10:00", tz="UTC")
    assert events["visitor_id"].tolist() == [17, 17, 23]
    assert PopularItemsRecommender().fit(events).recommend(23, n_items=1).item_ids == [5]


def test_to_canonical_explains_text_ids() -> None:
    frame = ordinary_frame().assign(visitor_id=["u-17", "u-17", "u-23"])
    with pytest.raises(SchemaError, match=r"visitor_id.*'u-17'.*pd\.factorize.*string_ids"):
        to_canonical(frame)


def test_to_canonical_refuses_fractional_and_missing_ids() -> None:
    with pytest.raises(SchemaError, match=r"item_id.*non-integer.*2\.5"):
        to_canonical(ordinary_frame().assign(item_id=[1.0, 2.5, 3.0]))
    with pytest.raises(SchemaError, match=r"item_id.*1 missing.*\[1\]"):
        to_canonical(ordinary_frame().assign(item_id=[1.0, np.nan, 3.0]))


def test_to_canonical_timestamp_units() -> None:
    frame = ordinary_frame().assign(timestamp=[T // 1_000, T // 1_000 + 1, T // 1_000 + 2])
    seconds = to_canonical(frame, timestamp_unit="s")
    assert seconds["timestamp"].iloc[0] == pd.Timestamp(T // 1_000, unit="s", tz="UTC")
    pd.testing.assert_series_equal(to_canonical(frame, timestamp_unit="auto")["timestamp"], seconds["timestamp"])
    with pytest.raises(SchemaError, match=r"row 2: 1430624917650"):
        to_canonical(frame.assign(timestamp=[T // 1_000, T // 1_000, T]), timestamp_unit="auto")


def test_negative_ids_in_a_frame_are_refused() -> None:
    frame = ordinary_frame().assign(item_id=[5, -1, 6])
    with pytest.raises(SchemaError, match=r"item_id.*negative.*-1"):
        to_canonical(frame)
    events = to_canonical(ordinary_frame())
    events["item_id"] = np.array([5, -1, 6], dtype=np.int64)
    with pytest.raises(SchemaError, match=r"\['item_id'\] has 1 negative ids, e\.g\. \[-1\]"):
        validate_events(events)
    events = to_canonical(ordinary_frame()).assign(category_id=pd.array([3, None, -7], dtype="Int64"))
    with pytest.raises(SchemaError, match="category_id"):
        validate_events(events)
