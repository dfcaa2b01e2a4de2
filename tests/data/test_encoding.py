"""IdMap, Interactions and the flat Sequences helpers, on hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelrec.config import EventWeights, settings
from funnelrec.data.encoding import (
    IdMap,
    Interactions,
    Sequences,
    event_weight_array,
    expand_prefixes,
    next_item_targets,
    sequences_from_sorted,
    slice_sequences,
    take_prefixes,
)
from funnelrec.data.schema import to_canonical

T0 = 1_700_000_000_000
MIN = 60_000
WEIGHTS = {"view": 1.0, "addtocart": 3.0, "transaction": 5.0}


def make_events(rows: list[tuple], session: bool = False) -> pd.DataFrame:
    """rows: (minute, visitor_id, event, item_id[, session_id])."""
    columns = ["minute", "visitor_id", "event", "item_id"] + (["session_id"] if session else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "timestamp", T0 + frame.pop("minute") * MIN)
    return to_canonical(frame)


def seqs(lists: list[list[int]], keys: list[int] | None = None) -> Sequences:
    lengths = [len(x) for x in lists]
    items = np.array([i for x in lists for i in x], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    k = np.arange(len(lists)) if keys is None else np.asarray(keys)
    return Sequences(items, offsets, k)


# --------------------------------------------------------------------------- IdMap


def test_idmap_round_trip() -> None:
    ids = np.array([105, 7, 42, 3])
    m = IdMap(ids)
    assert len(m) == 4
    np.testing.assert_array_equal(m.to_idx(ids), [0, 1, 2, 3])  # position = index
    np.testing.assert_array_equal(m.to_idx([42, 105, 42]), [2, 0, 2])
    np.testing.assert_array_equal(m.to_ids([3, 0, 2]), [3, 105, 42])
    np.testing.assert_array_equal(m.to_ids(m.to_idx(ids)), ids)
    np.testing.assert_array_equal(m.ids, ids)


def test_idmap_from_values_sorted_unique() -> None:
    m = IdMap.from_values(pd.Series([30, 10, 30, 20, 10]))
    np.testing.assert_array_equal(m.ids, [10, 20, 30])
    np.testing.assert_array_equal(m.to_idx([20, 10, 30]), [1, 0, 2])


def test_idmap_unknown_is_minus_one() -> None:
    m = IdMap([5, 3, 9])
    np.testing.assert_array_equal(m.to_idx([3, 4, 9, 1000]), [1, -1, 2, -1])
    np.testing.assert_array_equal(m.to_idx([3, 4], missing=99), [1, 99])
    assert 3 in m
    assert 4 not in m


def test_idmap_scalar_and_empty() -> None:
    m = IdMap([5, 3, 9])
    np.testing.assert_array_equal(m.to_idx(9), [2])
    out = m.to_idx([])
    assert out.dtype == np.int64
    assert out.shape == (0,)


def test_idmap_rejects_text_ids() -> None:
    with pytest.raises(TypeError, match="integers"):
        IdMap([1, 2]).to_idx(["a"])


def test_idmap_rejects_duplicates_naming_them() -> None:
    with pytest.raises(ValueError, match=r"unique.*\[3\]"):
        IdMap([3, 1, 3, 2])


def test_idmap_ids_read_only() -> None:
    m = IdMap([5, 3, 9])
    with pytest.raises(ValueError, match="read-only"):
        m.ids[0] = 100
    np.testing.assert_array_equal(m.ids, [5, 3, 9])


def test_idmap_independent_of_input_array() -> None:
    source = np.array([5, 3, 9], dtype=np.int64)
    m = IdMap(source)
    source[0] = 100
    np.testing.assert_array_equal(m.ids, [5, 3, 9])
    np.testing.assert_array_equal(m.to_idx([5, 100]), [0, -1])


def test_idmap_has_no_attribute_dict() -> None:
    m = IdMap([1, 2])
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]


def test_idmap_equality() -> None:
    assert IdMap([5, 3, 9]) == IdMap([5, 3, 9])
    assert IdMap([5, 3, 9]) != IdMap([3, 5, 9])
    assert IdMap([5, 3, 9]) != [5, 3, 9]


def test_idmap_hashable_by_content() -> None:
    assert hash(IdMap([5, 3, 9])) == hash(IdMap([5, 3, 9]))
    assert len({IdMap([5, 3, 9]), IdMap([5, 3, 9])}) == 1


def test_idmap_does_not_truncate_float_ids() -> None:
    m = IdMap([5, 3, 9])
    try:
        idx = m.to_idx([3.7])
    except TypeError:
        return
    np.testing.assert_array_equal(idx, [-1])


# --------------------------------------------------------------------------- weights


def test_event_weight_array() -> None:
    events = make_events([(0, 1, "view", 1), (1, 1, "addtocart", 1), (2, 1, "transaction", 1)])
    w = event_weight_array(events, {"view": 0.5, "addtocart": 2.0, "transaction": 7.0})
    np.testing.assert_array_equal(w, np.array([0.5, 2.0, 7.0], dtype=np.float32))
    with pytest.raises(ValueError, match="transaction"):
        event_weight_array(events, {"view": 1.0, "addtocart": 1.0})


def test_event_weight_array_uses_category_names() -> None:
    events = make_events([(0, 1, "view", 1), (1, 1, "addtocart", 1), (2, 1, "transaction", 1)])
    events["event"] = events["event"].astype("str").astype("category")
    w = event_weight_array(events, WEIGHTS)
    np.testing.assert_array_equal(w, np.array([1.0, 3.0, 5.0], dtype=np.float32))


# --------------------------------------------------------------------------- Interactions

# visitor 7: view 100, view 100, cart 100, view 200 ; visitor 3: view 200, buy 200, view 300
INTERACTION_ROWS = [
    (0, 7, "view", 100),
    (5, 3, "view", 200),
    (1, 7, "view", 100),
    (2, 7, "addtocart", 100),
    (6, 3, "transaction", 200),
    (3, 7, "view", 200),
    (9, 3, "view", 300),
]


def test_interactions_csr_sums_weights() -> None:
    inter = Interactions(make_events(INTERACTION_ROWS), event_weights=WEIGHTS)
    np.testing.assert_array_equal(inter.visitor_map.ids, [3, 7])
    np.testing.assert_array_equal(inter.item_map.ids, [100, 200, 300])
    assert (inter.n_visitors, inter.n_items) == (2, 3)
    expected = np.array(
        [
            [0.0, 1.0 + 5.0, 1.0],  # visitor 3
            [1.0 + 1.0 + 3.0, 1.0, 0.0],  # visitor 7
        ],
        dtype=np.float32,
    )
    assert inter.matrix.dtype == np.float32
    assert inter.matrix.shape == (2, 3)
    np.testing.assert_array_equal(inter.matrix.toarray(), expected)
    assert inter.matrix.nnz == 4  # duplicates summed, no explicit zeros
    np.testing.assert_array_equal(inter.item_counts(), [3, 3, 1])
    assert inter.n_unknown_events == 0


def test_interactions_default_weights_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        settings, "event_weights", EventWeights(view=2.0, addtocart=10.0, transaction=100.0)
    )
    inter = Interactions(make_events(INTERACTION_ROWS))
    assert inter.event_weights == {"view": 2.0, "addtocart": 10.0, "transaction": 100.0}
    np.testing.assert_array_equal(inter.matrix.toarray(), [[0.0, 102.0, 2.0], [14.0, 2.0, 0.0]])


def test_interactions_with_given_maps_skip_unknown() -> None:
    events = make_events(INTERACTION_ROWS)
    inter = Interactions(
        events,
        visitor_map=IdMap([7, 3, 99]),
        item_map=IdMap([200, 100]),
        event_weights=WEIGHTS,
    )
    assert inter.n_unknown_events == 1  # visitor 3's view of item 300
    np.testing.assert_array_equal(inter.matrix.toarray(), [[1.0, 5.0], [6.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(inter.item_counts(), [3, 3])
    assert inter.visitor_sequences().to_lists() == [[1, 1, 1, 0], [0, 0]]


def test_interactions_does_not_modify_events() -> None:
    events = make_events(INTERACTION_ROWS)
    before = events.copy()
    Interactions(events, event_weights=WEIGHTS)
    pd.testing.assert_frame_equal(events, before)


def test_visitor_sequences_time_ordered() -> None:
    inter = Interactions(make_events(INTERACTION_ROWS), event_weights=WEIGHTS)
    seq = inter.visitor_sequences()
    assert len(seq) == 2
    np.testing.assert_array_equal(seq.keys, [0, 1])  # visitor indices
    # visitor 3 (idx 0): 200, 200, 300 ; visitor 7 (idx 1): 100, 100, 100, 200  (as item indices)
    assert seq.to_lists() == [[1, 1, 2], [0, 0, 0, 1]]
    np.testing.assert_array_equal(seq.lengths, [3, 4])


def test_sequences_funnel_order_within_equal_timestamps() -> None:
    # same millisecond: the cart is listed before the view in the file, the buy before both
    rows = [
        (0, 1, "transaction", 30, 0),
        (0, 1, "addtocart", 20, 0),
        (0, 1, "view", 10, 0),
        (1, 1, "view", 40, 0),
    ]
    inter = Interactions(make_events(rows, session=True), event_weights=WEIGHTS)
    ids = inter.item_map.ids
    assert [ids[s].tolist() for s in inter.visitor_sequences().to_lists()] == [[10, 20, 30, 40]]
    assert [ids[s].tolist() for s in inter.session_sequences().to_lists()] == [[10, 20, 30, 40]]


def test_session_sequences() -> None:
    rows = [
        (10, 1, "view", 30, 5),
        (0, 1, "view", 10, 2),
        (1, 1, "view", 20, 2),
        (11, 1, "addtocart", 30, 5),
        (3, 2, "view", 20, 9),
        (2, 2, "view", 10, 9),
        (12, 1, "view", 10, 5),
    ]
    inter = Interactions(make_events(rows, session=True), event_weights=WEIGHTS)
    seq = inter.session_sequences()
    np.testing.assert_array_equal(seq.keys, [2, 5, 9])  # session ids
    ids = inter.item_map.ids
    assert [ids[s].tolist() for s in seq.to_lists()] == [[10, 20], [30, 30, 10], [10, 20]]
    np.testing.assert_array_equal(inter.visitor_map.to_ids(inter.session_visitor_idx()), [1, 1, 2])


def test_session_sequences_need_session_id() -> None:
    inter = Interactions(make_events(INTERACTION_ROWS), event_weights=WEIGHTS)
    with pytest.raises(ValueError, match="session_id"):
        inter.session_sequences()
    with pytest.raises(ValueError, match="session_id"):
        inter.session_visitor_idx()


# --------------------------------------------------------------------------- Sequences


def test_sequences_basics() -> None:
    s = seqs([[1, 2, 3], [4], [5, 6]], keys=[10, 11, 12])
    assert len(s) == 3
    np.testing.assert_array_equal(s.lengths, [3, 1, 2])
    np.testing.assert_array_equal(s.get(2), [5, 6])
    assert s.to_lists() == [[1, 2, 3], [4], [5, 6]]
    assert seqs([]).to_lists() == []


def test_sequences_from_sorted() -> None:
    s = sequences_from_sorted(np.array([4, 4, 7, 9, 9, 9]), np.array([1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(s.keys, [4, 7, 9])
    assert s.to_lists() == [[1, 2], [3], [4, 5, 6]]
    empty = sequences_from_sorted(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert len(empty) == 0
    np.testing.assert_array_equal(empty.offsets, [0])


def test_sequences_tails() -> None:
    s = seqs([[1, 2, 3, 4], [5], [6, 7]], keys=[10, 11, 12])
    t = s.tails(2)
    assert t.to_lists() == [[3, 4], [5], [6, 7]]
    np.testing.assert_array_equal(t.offsets, [0, 2, 3, 5])
    np.testing.assert_array_equal(t.keys, [10, 11, 12])
    assert s.tails(1).to_lists() == [[4], [5], [7]]
    assert s.tails(10).to_lists() == s.to_lists()


def test_sequences_take() -> None:
    s = seqs([[1, 2, 3], [4], [5, 6]], keys=[10, 11, 12])
    t = s.take(np.array([2, 0, 2]))
    assert t.to_lists() == [[5, 6], [1, 2, 3], [5, 6]]
    np.testing.assert_array_equal(t.keys, [12, 10, 12])
    np.testing.assert_array_equal(t.offsets, [0, 2, 5, 7])
    assert len(s.take(np.array([], dtype=np.int64))) == 0


def test_expand_prefixes() -> None:
    a, b, c, d, e, f = 11, 12, 13, 14, 15, 16
    prefixes, targets, session_row = expand_prefixes(seqs([[a, b, c], [d], [e, f]]))
    assert prefixes.to_lists() == [[a], [a, b], [e]]
    np.testing.assert_array_equal(targets, [b, c, f])
    np.testing.assert_array_equal(session_row, [0, 0, 2])
    np.testing.assert_array_equal(prefixes.keys, [0, 1, 2])


def test_selected_prefixes_without_expanding_all() -> None:
    sessions = seqs([[11, 12, 13, 14], [15], [16, 17]])
    session_row, prefix_length, targets = next_item_targets(sessions)
    np.testing.assert_array_equal(session_row, [0, 0, 0, 2])
    np.testing.assert_array_equal(prefix_length, [1, 2, 3, 1])
    np.testing.assert_array_equal(targets, [12, 13, 14, 17])
    picked = take_prefixes(sessions, session_row[[2, 3]], prefix_length[[2, 3]])
    assert picked.to_lists() == [[11, 12, 13], [16]]
    everything, _, _ = expand_prefixes(sessions)
    assert take_prefixes(sessions, session_row, prefix_length).to_lists() == everything.to_lists()


def test_expand_prefixes_without_targets() -> None:
    prefixes, targets, session_row = expand_prefixes(seqs([[1], [2]]))
    assert len(prefixes) == 0
    assert len(targets) == 0
    assert len(session_row) == 0


def test_slice_sequences() -> None:
    s = seqs([[1, 2, 3], [4], [5, 6], [7]], keys=[10, 11, 12, 13])
    mid = slice_sequences(s, 1, 3)
    assert mid.to_lists() == [[4], [5, 6]]
    np.testing.assert_array_equal(mid.offsets, [0, 1, 3])
    np.testing.assert_array_equal(mid.keys, [11, 12])
    assert slice_sequences(s, 0, 4).to_lists() == s.to_lists()
    assert len(slice_sequences(s, 2, 2)) == 0
