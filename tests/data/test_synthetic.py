"""The synthetic RetailRocket-format generator: format, determinism, and the structure it plants."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.schema import validate_events
from funnelrec.data.synthetic import (
    BEGIN_MS,
    END_MS,
    SCALES,
    ScaleConfig,
    SyntheticData,
    describe,
    format_description,
    generate,
    generate_to_dir,
    write,
)

THIRTY_MINUTES_MS = 30 * 60 * 1000


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate("tiny", seed=42)


@pytest.fixture(scope="module")
def written(data: SyntheticData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write(data, tmp_path_factory.mktemp("raw"))


def _views_by_session(data: SyntheticData) -> pd.DataFrame:
    """View events with their generated session, in session then time order."""
    ev = data.events.assign(session=data.session_ids)
    views = ev[ev["event"] == "view"]
    return views.sort_values(["session", "timestamp"], kind="stable")


# --------------------------------------------------------------------------------------------
# configuration and determinism
# --------------------------------------------------------------------------------------------


def test_scales_have_the_documented_sizes() -> None:
    assert set(SCALES) == {"tiny", "demo", "full"}
    full = SCALES["full"]
    assert (full.n_visitors, full.n_items, full.n_categories, full.n_roots) == (
        1_407_580,
        235_061,
        1_669,
        25,
    )
    assert SCALES["tiny"].n_items < SCALES["demo"].n_items < full.n_items


@pytest.mark.parametrize(
    "changes",
    [
        {"n_roots": 40},  # not fewer roots than categories
        {"n_items": 3},  # fewer items than successors + 1
        {"successor_probs": (0.5, 0.2)},  # does not sum to 1
        {"p_successor": 0.8, "p_repeat": 0.2, "p_preferred": 0.1},  # walk probabilities > 1
        {"cart_rate": 1.5},
        {"n_visitors": 0},
    ],
)
def test_scale_config_rejects_bad_values(changes: dict) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SCALES["tiny"], **changes)


def test_unknown_scale_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        generate("huge")


def test_same_seed_same_data_other_seed_other_data(data: SyntheticData) -> None:
    again = generate("tiny", seed=42)
    for name in ("events", "item_properties", "category_tree", "items", "visitors"):
        pd.testing.assert_frame_equal(getattr(data, name), getattr(again, name))
    np.testing.assert_array_equal(data.successors, again.successors)
    np.testing.assert_array_equal(data.session_ids, again.session_ids)

    other = generate("tiny", seed=43)
    assert not data.events.equals(other.events)
    assert not np.array_equal(data.items["item_id"].to_numpy(), other.items["item_id"].to_numpy())


def test_tiny_is_fast_and_small(data: SyntheticData) -> None:
    start = time.perf_counter()
    generate("tiny", seed=1)
    assert time.perf_counter() - start < 1.0
    assert 5_000 <= len(data.events) <= 15_000
    assert 300 <= data.events["itemid"].nunique() <= 500
    assert len(data.category_tree) == 40


def test_custom_scale_config() -> None:
    cfg = ScaleConfig("mini", n_visitors=300, n_items=60, n_categories=12, n_roots=3)
    small = generate(cfg, seed=0)
    assert small.config is cfg
    assert len(small.items) == 60
    assert small.events["visitorid"].max() < 300
    assert len(small.category_tree) == 12


# --------------------------------------------------------------------------------------------
# the RetailRocket format
# --------------------------------------------------------------------------------------------


def test_frames_have_raw_retailrocket_columns_and_dtypes(data: SyntheticData) -> None:
    ev = data.events
    assert list(ev.columns) == ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    assert ev["timestamp"].dtype == np.int64
    assert ev["visitorid"].dtype == np.int64
    assert ev["itemid"].dtype == np.int64
    assert ev["transactionid"].dtype == pd.Int64Dtype()
    assert set(ev["event"].unique()) == {"view", "addtocart", "transaction"}
    assert ev["timestamp"].is_monotonic_increasing
    assert list(data.item_properties.columns) == ["timestamp", "itemid", "property", "value"]
    assert list(data.category_tree.columns) == ["categoryid", "parentid"]
    assert data.category_tree["parentid"].dtype == pd.Int64Dtype()


def test_timestamps_are_ms_epoch_in_the_period(data: SyntheticData) -> None:
    for frame in (data.events, data.item_properties):
        ts = frame["timestamp"].to_numpy()
        assert ts.min() >= BEGIN_MS and ts.max() <= END_MS
    start = pd.Timestamp(int(data.events["timestamp"].min()), unit="ms", tz="UTC")
    end = pd.Timestamp(int(data.events["timestamp"].max()), unit="ms", tz="UTC")
    assert pd.Timestamp("2015-05-03", tz="UTC") <= start < pd.Timestamp("2015-05-10", tz="UTC")
    assert pd.Timestamp("2015-09-10", tz="UTC") < end <= pd.Timestamp("2015-09-19", tz="UTC")


def test_written_files_are_exactly_retailrocket(
    data: SyntheticData, written: dict[str, Path]
) -> None:
    out = written["events"].parent
    assert sorted(p.name for p in out.iterdir()) == [
        "category_tree.csv",
        "events.csv",
        "ground_truth.npz",
        "item_properties_part1.csv",
        "item_properties_part2.csv",
    ]  # and no temporary files left behind

    lines = written["events"].read_text().splitlines()
    assert lines[0] == "timestamp,visitorid,event,itemid,transactionid"
    assert len(lines) == len(data.events) + 1
    assert '"' not in "".join(lines)
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(r) == 5 for r in rows)
    assert all(len(r[0]) == 13 and r[0].isdigit() for r in rows)  # ms epoch
    assert all((r[2] == "transaction") == (r[4] != "") for r in rows)
    assert all(r[4].isdigit() for r in rows if r[4])
    first = data.events.iloc[0]
    assert rows[0][:4] == [
        str(first.timestamp),
        str(first.visitorid),
        first.event,
        str(first.itemid),
    ]

    part1 = written["item_properties_part1"].read_text().splitlines()
    part2 = written["item_properties_part2"].read_text().splitlines()
    assert part1[0] == part2[0] == "timestamp,itemid,property,value"
    assert len(part1) - 1 + len(part2) - 1 == len(data.item_properties)
    assert abs(len(part1) - len(part2)) <= 1
    assert '"' not in "".join(part1 + part2)
    assert all(line.count(",") == 3 for line in part1[1:] + part2[1:])
    assert any(
        line.split(",")[2] == "790" and line.split(",")[3].startswith("n") for line in part1[1:]
    )

    tree = written["category_tree"].read_text().splitlines()
    assert tree[0] == "categoryid,parentid"
    assert len(tree) == len(data.category_tree) + 1
    roots = [line for line in tree[1:] if line.endswith(",")]
    assert len(roots) == data.config.n_roots

    truth = np.load(written["ground_truth"], allow_pickle=False)
    np.testing.assert_array_equal(truth["session_ids"], data.session_ids)
    np.testing.assert_array_equal(truth["successors"], data.successors)


def test_written_events_read_back_equal(data: SyntheticData, written: dict[str, Path]) -> None:
    back = pd.read_csv(written["events"], dtype={"transactionid": "Int64"})
    pd.testing.assert_frame_equal(back, data.events, check_dtype=False)
    tree = pd.read_csv(written["category_tree"], dtype={"parentid": "Int64"})
    pd.testing.assert_frame_equal(tree, data.category_tree)


def test_write_replaces_existing_files(data: SyntheticData, tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("stale\n")
    paths = write(data, tmp_path, ground_truth=False)
    assert "ground_truth" not in paths
    assert (
        paths["events"].read_text().startswith("timestamp,visitorid,event,itemid,transactionid\n")
    )
    assert not list(tmp_path.glob(".*tmp*"))


def test_generate_to_dir(tmp_path: Path) -> None:
    paths = generate_to_dir(tmp_path / "raw", scale="tiny", seed=3)
    assert {"events", "item_properties_part1", "item_properties_part2", "category_tree"} <= set(
        paths
    )
    assert all(p.exists() for p in paths.values())


def test_canonical_events_follow_the_schema(data: SyntheticData) -> None:
    canonical = data.canonical_events()
    validate_events(canonical, require=("session_id", "category_id"))
    assert len(canonical) == len(data.events)
    assert canonical["timestamp"].dtype == pd.DatetimeTZDtype(unit="ms", tz="UTC")
    np.testing.assert_array_equal(
        canonical["timestamp"].astype("int64").to_numpy(), data.events["timestamp"].to_numpy()
    )
    np.testing.assert_array_equal(canonical["session_id"].to_numpy(), data.session_ids)
    assert (canonical["event"].astype("str") == data.events["event"]).all()


# --------------------------------------------------------------------------------------------
# the funnel
# --------------------------------------------------------------------------------------------


def test_event_shares_near_retailrocket(data: SyntheticData) -> None:
    stats = describe(data.events)
    assert 0.955 <= stats["share_view"] <= 0.978
    assert 0.015 <= stats["share_addtocart"] <= 0.035
    assert 0.004 <= stats["share_transaction"] <= 0.013
    assert 1.7 <= stats["events_per_visitor_mean"] <= 2.2
    assert stats["n_transactions"] <= stats["n_transaction"]


def test_transaction_ids_only_on_transactions_and_one_per_session(data: SyntheticData) -> None:
    ev = data.events.assign(session=data.session_ids)
    is_tx = ev["event"] == "transaction"
    assert (ev["transactionid"].notna() == is_tx).all()
    tx = ev[is_tx]
    ids_per_session = tx.groupby("session")["transactionid"].nunique()
    sessions_per_id = tx.groupby("transactionid")["session"].nunique()
    assert (ids_per_session == 1).all()
    assert (sessions_per_id == 1).all()
    # several items bought together somewhere (transactions are per purchase, not per item)
    assert tx["transactionid"].nunique() < len(tx)


def test_every_addtocart_follows_a_view_and_every_purchase_a_cart(data: SyntheticData) -> None:
    ev = data.events.assign(session=data.session_ids)
    first = ev.groupby(["session", "itemid", "event"], observed=True)["timestamp"].min().unstack()
    carts = first[first["addtocart"].notna()]
    assert len(carts) > 0
    assert carts["view"].notna().all()
    assert (carts["view"] < carts["addtocart"]).all()
    buys = first[first["transaction"].notna()]
    assert buys["addtocart"].notna().all()
    assert (buys["addtocart"] <= buys["transaction"]).all()
    # visitor level too: the view is by the same visitor
    by_visitor = (
        ev.groupby(["visitorid", "itemid", "event"], observed=True)["timestamp"].min().unstack()
    )
    by_visitor = by_visitor[by_visitor["addtocart"].notna()]
    assert (by_visitor["view"] < by_visitor["addtocart"]).all()


def test_purchase_propensity_drives_the_funnel() -> None:
    demoish = generate(dataclasses.replace(SCALES["tiny"], n_visitors=40_000), seed=5)
    ev = demoish.events
    propensity = demoish.visitors["purchase_propensity"].to_numpy()[ev["visitorid"].to_numpy()]
    high = propensity > np.quantile(demoish.visitors["purchase_propensity"], 0.75)
    low = propensity < np.quantile(demoish.visitors["purchase_propensity"], 0.25)
    is_cart = (ev["event"] == "addtocart").to_numpy()
    is_view = (ev["event"] == "view").to_numpy()
    rate_high = is_cart[high].sum() / is_view[high].sum()
    rate_low = is_cart[low].sum() / is_view[low].sum()
    assert rate_high > 3 * rate_low


# --------------------------------------------------------------------------------------------
# time and sessions
# --------------------------------------------------------------------------------------------


def test_generated_sessions_are_recovered_by_a_30_minute_timeout(data: SyntheticData) -> None:
    ev = data.events.assign(session=data.session_ids)
    ev = ev.sort_values(["visitorid", "timestamp"], kind="stable")
    visitor = ev["visitorid"].to_numpy()
    ts = ev["timestamp"].to_numpy()
    session = ev["session"].to_numpy()
    same_visitor = visitor[1:] == visitor[:-1]
    same_session = session[1:] == session[:-1]
    gap = np.diff(ts)
    assert (gap[same_session] < THIRTY_MINUTES_MS).all()
    assert (gap[same_visitor & ~same_session] > 2 * THIRTY_MINUTES_MS).all()
    assert (same_visitor[same_session]).all()  # a session belongs to one visitor
    # a timeout sessionizer gives the same partition
    recovered = np.cumsum(np.r_[True, ~same_visitor | (gap > THIRTY_MINUTES_MS)])
    pairs = pd.DataFrame({"recovered": recovered, "true": session}).drop_duplicates()
    assert pairs["recovered"].is_unique and pairs["true"].is_unique


def test_visits_most_visitors_once_some_return(data: SyntheticData) -> None:
    ev = data.events.assign(session=data.session_ids)
    sessions_per_visitor = ev.groupby("visitorid")["session"].nunique()
    one_visit = (sessions_per_visitor == 1).mean()
    assert 0.8 <= one_visit <= 0.97
    assert sessions_per_visitor.max() >= 4
    expected = data.visitors.set_index("visitor_id")["n_sessions"].reindex(
        sessions_per_visitor.index
    )
    assert (sessions_per_visitor == expected).all()


def test_daily_rhythm(data: SyntheticData) -> None:
    hour = (data.events["timestamp"].to_numpy() // 3_600_000) % 24
    counts = np.bincount(hour, minlength=24)
    assert counts[17:23].sum() > 3 * counts[7:13].sum()  # evening (UTC) beats the quiet hours


# --------------------------------------------------------------------------------------------
# learnable structure
# --------------------------------------------------------------------------------------------


def test_next_items_follow_the_true_successors(data: SyntheticData) -> None:
    views = _views_by_session(data)
    session = views["session"].to_numpy()
    item = views["itemid"].to_numpy()
    pair = (session[1:] == session[:-1]) & (item[1:] != item[:-1])
    prev, nxt = item[:-1][pair], item[1:][pair]
    assert prev.size > 500
    row = np.searchsorted(data.items["item_id"].to_numpy(), prev)
    match = data.successors[row] == nxt[:, None]
    hit_rate = match.any(axis=1).mean()
    chance = data.successors.shape[1] / len(data.items)
    assert hit_rate > 0.5
    assert hit_rate > 20 * chance
    by_rank = match.sum(axis=0)
    assert by_rank[0] > by_rank[-1]  # the first successor is the likeliest


def test_successors_are_distinct_nearby_items(data: SyntheticData) -> None:
    succ = data.successors
    items = data.items["item_id"].to_numpy()
    assert succ.shape == (len(items), len(data.successor_probs))
    assert np.isin(succ, items).all()
    assert (succ != items[:, None]).all()
    assert (np.sort(succ, axis=1)[:, 1:] != np.sort(succ, axis=1)[:, :-1]).all()
    category = data.items["category_id"].to_numpy()
    root = data.items["root_category_id"].to_numpy()
    succ_row = np.searchsorted(items, succ)
    same_category = (category[succ_row] == category[:, None]).mean()
    same_root = (root[succ_row] == root[:, None]).mean()
    assert same_category > 0.6
    assert same_root > 0.9
    frame = data.successor_frame()
    assert len(frame) == succ.size
    np.testing.assert_allclose(frame.groupby("item_id")["probability"].sum(), 1.0)


def test_returning_visitors_stick_to_their_preferred_categories(data: SyntheticData) -> None:
    views = data.events[data.events["event"] == "view"]
    visitors = data.visitors.set_index("visitor_id")
    returning = visitors["is_returning"].to_numpy()[views["visitorid"].to_numpy()]
    v = views[returning]
    category = data.item_category(v["itemid"].to_numpy())
    preferred = visitors["preferred_category_id"].to_numpy()[v["visitorid"].to_numpy()]
    secondary = visitors["secondary_category_id"].to_numpy()[v["visitorid"].to_numpy()]
    in_preferred = ((category == preferred) | (category == secondary)).mean()
    # chance: how much of all traffic the visitor's preferred category gets
    traffic = pd.Series(data.item_category(views["itemid"].to_numpy())).value_counts(normalize=True)
    chance = traffic.reindex(preferred).fillna(0.0).mean()
    assert len(v) > 500
    assert in_preferred > 0.4
    assert in_preferred > 4 * chance


def test_popularity_is_skewed(data: SyntheticData) -> None:
    counts = data.events.loc[data.events["event"] == "view", "itemid"].value_counts()
    top_decile = counts.iloc[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.3


# --------------------------------------------------------------------------------------------
# catalogue
# --------------------------------------------------------------------------------------------


def test_category_tree_is_a_tree(data: SyntheticData) -> None:
    tree = data.category_tree
    assert tree["categoryid"].is_unique
    roots = tree["parentid"].isna()
    assert roots.sum() == data.config.n_roots
    parents = tree["parentid"].dropna()
    assert parents.isin(tree["categoryid"]).all()
    parent_of = dict(zip(tree["categoryid"], tree["parentid"], strict=True))
    depth = {}
    for node in tree["categoryid"]:
        seen, current = set(), node
        while not pd.isna(parent_of[current]):
            assert current not in seen, "cycle in the category tree"
            seen.add(current)
            current = int(parent_of[current])
        depth[node] = len(seen)
    assert 2 <= max(depth.values()) <= 6
    # items live in categories of this tree, under the root the truth says
    items = data.items
    assert items["category_id"].isin(tree["categoryid"]).all()
    for cat, root in zip(
        items["category_id"].head(50), items["root_category_id"].head(50), strict=True
    ):
        current = cat
        while not pd.isna(parent_of[current]):
            current = int(parent_of[current])
        assert current == root


def test_ids_look_like_retailrocket(data: SyntheticData) -> None:
    item_ids = data.items["item_id"].to_numpy()
    assert np.all(np.diff(item_ids) > 0)
    assert item_ids.max() > 1.5 * len(item_ids)  # sparse ids, not 0..n-1
    cat_ids = data.category_tree["categoryid"].to_numpy()
    assert cat_ids.min() >= 0 and cat_ids.max() < 2 * len(cat_ids)


def test_latest_categoryid_property_is_the_true_category(data: SyntheticData) -> None:
    props = data.item_properties
    cats = props[props["property"] == "categoryid"]
    latest = cats.sort_values("timestamp").groupby("itemid")["value"].last().astype("int64")
    truth = data.items.set_index("item_id")["category_id"]
    assert set(latest.index) == set(truth.index)
    assert (latest == truth.reindex(latest.index)).all()
    # some items moved: an older, different category row precedes the true one
    earliest = cats.sort_values("timestamp").groupby("itemid")["value"].first().astype("int64")
    moved = (earliest != latest).sum()
    assert 0 < moved < 0.15 * len(truth)


def test_price_property_matches_the_truth(data: SyntheticData) -> None:
    props = data.item_properties
    price = props[props["property"] == "790"].set_index("itemid")["value"]
    assert price.str.fullmatch(r"n\d+\.000").all()
    parsed = price.str[1:].astype(float)
    truth = data.items.set_index("item_id")["price"]
    np.testing.assert_allclose(parsed.sort_index().to_numpy(), truth.sort_index().to_numpy())


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------


def _hand_made_raw() -> pd.DataFrame:
    day = 86_400_000
    return pd.DataFrame(
        {
            "timestamp": [
                BEGIN_MS,
                BEGIN_MS + 1000,
                BEGIN_MS + 2000,
                BEGIN_MS + 3000,
                BEGIN_MS + 2 * day,
            ],
            "visitorid": [1, 1, 1, 1, 2],
            "event": ["view", "view", "addtocart", "transaction", "view"],
            "itemid": [10, 11, 11, 11, 10],
            "transactionid": pd.array([None, None, None, 7, None], dtype="Int64"),
        }
    )


def test_describe_raw_frame() -> None:
    stats = describe(_hand_made_raw())
    assert stats["n_events"] == 5
    assert stats["n_visitors"] == 2
    assert stats["n_items"] == 2
    assert (stats["n_view"], stats["n_addtocart"], stats["n_transaction"]) == (3, 1, 1)
    assert stats["share_view"] == pytest.approx(0.6)
    assert stats["share_addtocart"] == pytest.approx(0.2)
    assert stats["n_transactions"] == 1
    assert stats["cart_per_view"] == pytest.approx(1 / 3)
    assert stats["purchase_per_cart"] == pytest.approx(1.0)
    assert stats["start"] == pd.Timestamp("2015-05-03 03:00:00", tz="UTC")
    assert stats["days"] == pytest.approx(2.0)
    assert stats["events_per_visitor_mean"] == pytest.approx(2.5)
    assert stats["events_per_visitor_median"] == pytest.approx(2.5)
    assert stats["share_single_event_visitors"] == pytest.approx(0.5)
    assert "n_sessions" not in stats and "n_categories" not in stats


def test_describe_canonical_frame_with_sessions_and_categories() -> None:
    raw = _hand_made_raw()
    canonical = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(raw["timestamp"], unit="ms", utc=True),
            "visitor_id": raw["visitorid"],
            "event": pd.Categorical(raw["event"], categories=["view", "addtocart", "transaction"]),
            "item_id": raw["itemid"],
            "transaction_id": raw["transactionid"],
            "category_id": pd.array([5, 6, 6, 6, 5], dtype="Int64"),
            "session_id": [0, 0, 0, 0, 1],
        }
    )
    stats = describe(canonical)
    assert stats["n_events"] == 5 and stats["n_visitors"] == 2 and stats["n_items"] == 2
    assert stats["n_categories"] == 2
    assert stats["n_transactions"] == 1
    assert stats["days"] == pytest.approx(2.0)
    assert stats["end"] == pd.Timestamp("2015-05-05 03:00:00", tz="UTC")
    assert stats["n_sessions"] == 2
    assert stats["events_per_session_mean"] == pytest.approx(2.5)
    assert stats["items_per_session_mean"] == pytest.approx(1.5)
    assert stats["share_single_event_sessions"] == pytest.approx(0.5)

    text = format_description(stats)
    assert "events" in text and "5" in text
    assert "2015-05-03 03:00:00 UTC" in text
    assert "60.00%" in text  # the view share
    assert len(text.splitlines()) >= 15


def test_describe_rejects_frames_without_the_columns() -> None:
    with pytest.raises(ValueError, match="visitor"):
        describe(pd.DataFrame({"timestamp": [1], "event": ["view"], "itemid": [1]}))
