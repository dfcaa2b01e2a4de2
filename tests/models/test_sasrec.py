"""SASRec: learns deterministic item chains, is causal, covers every training pair once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import RecommenderConformance

from funnelrec.data.encoding import Sequences
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models.base import Recommender
from funnelrec.models.sequential import sasrec
from funnelrec.models.sequential.sasrec import (
    SASRecNet,
    SASRecRecommender,
    left_padded,
    training_windows,
)

N_ITEMS = 30
FAST = {"hidden_dim": 32, "batch_size": 64, "dropout": 0.1, "learning_rate": 0.01,
        "show_progress": False, "seed": 7, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is fastest and avoids stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TestSASRecConformance(RecommenderConformance):
    def make_model(self):
        return SASRecRecommender(epochs=2, **FAST)


def item_id(i: np.ndarray | int) -> np.ndarray | int:
    return i * 7 + 100  # external ids that are not dense indices


@pytest.fixture(scope="module")
def chains() -> tuple[pd.DataFrame, dict[int, int]]:
    """400 visitors, each walking a fixed cycle of 30 items from a random start for 3-15 steps."""
    rng = np.random.default_rng(0)
    cycle = rng.permutation(N_ITEMS)
    n_visitors = 400
    lengths = rng.integers(3, 16, n_visitors)
    starts = rng.integers(0, N_ITEMS, n_visitors)
    visitor = np.repeat(np.arange(n_visitors), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = cycle[(np.repeat(starts, lengths) + step) % N_ITEMS]
    frame = pd.DataFrame({
        "timestamp": 1_600_000_000_000 + visitor * 10_000_000 + step * 60_000,
        "visitor_id": visitor + 500,
        "event": "view",
        "item_id": item_id(items),
    })
    events = SessionBuilder().build_sessions(to_canonical(frame))
    successor = {int(item_id(cycle[i])): int(item_id(cycle[(i + 1) % N_ITEMS])) for i in range(N_ITEMS)}
    return events, successor


@pytest.fixture(scope="module")
def trained(chains) -> SASRecRecommender:
    events, _ = chains
    return SASRecRecommender(epochs=12, **FAST).fit(events)


def successor_accuracy(model: Recommender, successor: dict[int, int]) -> float:
    hits = [model.recommend_by_item_ids([a], n_items=1)[0][0] == b for a, b in successor.items()]
    return float(np.mean(hits))


# --------------------------------------------------------------------------- learning
def test_session_of_one_item_predicts_its_successor(trained, chains):
    _, successor = chains
    assert trained.loss_type_ == "ce"  # auto on a small catalogue
    assert successor_accuracy(trained, successor) >= 0.9


def test_visitor_recommendation_predicts_successor_of_last_item(trained, chains, monkeypatch):
    events, successor = chains
    monkeypatch.setattr(trained, "history_pooling", "last")  # the paper's query: the next click
    last = events.sort_values("timestamp").groupby("visitor_id")["item_id"].last()
    item_ids, _ = trained.recommend_batch(last.index.to_numpy(), n_items=1, exclude_seen=False)
    expected = last.map(successor).to_numpy()
    assert np.mean(item_ids[:, 0] == expected) >= 0.9
    visitor = int(last.index[0])
    assert trained.recommend(visitor, n_items=1, exclude_seen=False)[0][0] == item_ids[0, 0]


def test_mean_pooled_history_ranks_the_successors_of_the_whole_history(trained, chains):
    """The default history query averages the next-item predictions after every history item."""
    events, successor = chains
    ordered = events.sort_values("timestamp")
    history = ordered.groupby("visitor_id")["item_id"].agg(list)
    visitors = history.index.to_numpy()
    # a visitor with n history items: their top n are the n successors (a last-item query
    # knows only one of them)
    top, _ = trained.recommend_batch(visitors, n_items=15, exclude_seen=False)
    overlap = [len(set(row[: len(items)]) & {successor[i] for i in items}) / len(items)
               for row, items in zip(top, history, strict=True)]
    assert np.mean(overlap) >= 0.8
    # the only unseen successor of a chain of 3-15 of 30 items is the last item's
    top, _ = trained.recommend_batch(visitors, n_items=1, exclude_seen=True)
    assert np.mean(top[:, 0] == history.map(lambda items: successor[items[-1]]).to_numpy()) >= 0.8


def test_mean_pooling_is_the_mean_of_the_history_hidden_states(trained):
    user = 3
    items = trained.history_items_[trained.history_offsets_[user] : trained.history_offsets_[user + 1]]
    with torch.inference_mode():
        hidden = trained.net_(torch.as_tensor(items[None, :] + 1))[0]
        expected = (hidden.mean(0) @ trained.net_.item_weights().T).numpy()
    np.testing.assert_allclose(trained.score_users(np.array([user]))[0], expected, rtol=1e-4, atol=1e-5)


def test_mean_pooling_over_a_batch_of_uneven_histories_matches_each_visitor_alone(chains):
    """Histories of 3-15 items with max_seq_length 6: padded, trimmed and truncated rows in one
    batch each give the mean of their own last-6 hidden states."""
    events, _ = chains
    model = SASRecRecommender(epochs=1, max_seq_length=6, **FAST).fit(events)
    ordered = events.sort_values("timestamp", kind="stable")
    history = ordered.groupby("visitor_id")["item_id"].agg(list)
    lengths = history.map(len)
    assert lengths.min() < 6 < lengths.max()
    users = model.visitor_map_.to_idx(history.index.to_numpy())
    batched = model.score_users(users)
    with torch.inference_mode():
        weights = model.net_.item_weights()
        for row, items in enumerate(history):
            tail = model.item_map_.to_idx(np.array(items[-6:])) + 1
            hidden = model.net_(torch.as_tensor(tail[None, :]))[0]
            np.testing.assert_allclose(batched[row], (hidden.mean(0) @ weights.T).numpy(),
                                       rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def chains_with_categories(chains) -> pd.DataFrame:
    events, _ = chains
    # three categories by external id, so that every category holds items all along the cycle
    return events.assign(category_id=(events["item_id"] // 7 % 3).astype("Int64"))


def test_items_of_a_category_share_its_embedding(chains_with_categories):
    model = SASRecRecommender(epochs=1, **FAST).fit(chains_with_categories)
    net = model.net_
    assert net.category_embedding is not None and net.category_embedding.num_embeddings == 4  # 3 + unknown
    own = net.item_embedding.weight[1:].detach()
    shared = (net.item_weights().detach() - own).numpy()
    codes = model._category_codes()
    for code in (1, 2, 3):
        rows = shared[codes == code]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-6)
    assert not np.allclose(shared[codes == 1][0], shared[codes == 2][0])
    # inputs use the same vectors as the outputs
    seq = torch.tensor([[0, 1, 2]])
    np.testing.assert_allclose(net._embed(seq)[0, 1:].detach().numpy(), net.item_weights()[:2].detach().numpy(),
                               atol=1e-6)


def test_categories_off_or_absent_leave_the_plain_network(chains, chains_with_categories):
    off = SASRecRecommender(epochs=1, use_categories=False, **FAST).fit(chains_with_categories)
    absent = SASRecRecommender(epochs=1, **FAST).fit(chains[0])
    assert off.net_.category_embedding is None and absent.net_.category_embedding is None
    np.testing.assert_array_equal(off.net_.item_weights().detach().numpy(),
                                  off.net_.item_embedding.weight[1:].detach().numpy())


def test_cached_output_table_follows_the_weights(chains_with_categories):
    net = SASRecRecommender(epochs=1, **FAST).fit(chains_with_categories).net_
    with torch.inference_mode():
        first = net.item_weights()
        assert net.item_weights() is first  # cached while nothing changes
    with torch.no_grad():
        net.category_embedding.weight[1] += 1.0
    with torch.inference_mode():
        fresh = net.item_weights()
    expected = net.item_embedding.weight[1:] + net.category_embedding(net.item_category[1:])
    np.testing.assert_allclose(fresh.numpy(), expected.detach().numpy(), atol=1e-6)
    assert not torch.equal(fresh, first)
    assert net.item_weights().requires_grad  # training reads the live tables


def test_cache_follows_load_state_dict_and_can_be_cleared(chains_with_categories):
    first = SASRecRecommender(epochs=1, **FAST).fit(chains_with_categories).net_
    other = SASRecRecommender(epochs=1, **{**FAST, "seed": 8}).fit(chains_with_categories).net_
    with torch.inference_mode():
        stale = first.item_weights().clone()
    first.load_state_dict(other.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(first.item_weights(), other.item_weights())
        assert not torch.equal(first.item_weights(), stale)
    # a write through .data bypasses the version counter: clearing the cache picks it up
    first.category_embedding.weight.data[1:] = 0.0
    first.clear_item_weights_cache()
    with torch.inference_mode():
        torch.testing.assert_close(first.item_weights(), first.item_embedding.weight[1:].detach())


def test_network_built_under_inference_mode_scores_without_a_cache(chains_with_categories):
    codes = np.array([0, 1, 2, 1, 0])
    with torch.inference_mode():
        net = SASRecNet(5, 8, 2, 1, 4, 0.0, item_category=codes).eval()
        weights = net.item_weights()  # inference tensors: no version counter to key a cache on
        expected = net.item_embedding.weight[1:] + net.category_embedding.weight[torch.as_tensor(codes)]
        torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("codes, message", [(np.array([1, 2]), "one code per item"),
                                            (np.array([0, 1, -1]), ">= 0"),
                                            (np.array([0.5, 1.0, 2.0]), "integer")])
def test_bad_item_categories_are_rejected(codes, message):
    with pytest.raises(ValueError, match=message):
        SASRecNet(3, 8, 2, 1, 4, 0.0, item_category=codes)


def test_sparse_updates_with_partly_known_categories(chains_with_categories, chains, monkeypatch):
    """The SparseAdam path with a category table, where a third of the items have none."""
    _, successor = chains
    events = chains_with_categories.copy()
    events.loc[events["category_id"] == 2, "category_id"] = pd.NA
    monkeypatch.setattr(sasrec, "SPARSE_MIN_ITEMS", N_ITEMS)
    model = SASRecRecommender(epochs=15, loss_type="sampled", n_negatives=10, **FAST).fit(events)
    net = model.net_
    assert model.sparse_updates_ and net.item_embedding.sparse and not net.category_embedding.sparse
    codes = model._category_codes()
    assert (codes == 0).any() and (codes > 0).any()
    shared = (net.item_weights() - net.item_embedding.weight[1:]).detach().numpy()
    assert np.abs(shared[codes == 0]).max() == 0  # unknown category: the id vector alone
    assert torch.count_nonzero(net.category_embedding.weight[0]) == 0
    assert successor_accuracy(model, successor) >= 0.8


def test_category_model_round_trips(chains_with_categories, tmp_path):
    model = SASRecRecommender(epochs=2, **FAST).fit(chains_with_categories)
    loaded = Recommender.load(model.save(tmp_path / "sasrec_categories"))
    assert loaded.net_.category_embedding is not None
    users = np.arange(len(model.visitor_map_))
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))


@pytest.mark.parametrize("loss_type", ["ce", "sampled", "gbce"])
def test_each_loss_type_trains(chains, loss_type):
    events, successor = chains
    model = SASRecRecommender(epochs=15, loss_type=loss_type, n_negatives=10, **FAST).fit(events)
    losses = [h["loss"] for h in model.history_]
    assert model.loss_type_ == loss_type
    assert losses[-1] < 0.5 * losses[0]
    assert successor_accuracy(model, successor) >= 0.8  # chance is 1/30


@pytest.mark.parametrize("loss_type", ["sampled", "gbce"])
def test_large_catalogues_update_the_item_table_sparsely(chains, monkeypatch, loss_type):
    events, successor = chains
    monkeypatch.setattr(sasrec, "SPARSE_MIN_ITEMS", N_ITEMS)
    model = SASRecRecommender(epochs=15, loss_type=loss_type, n_negatives=10, **FAST).fit(events)
    assert model.sparse_updates_ and model.net_.item_embedding.sparse
    assert successor_accuracy(model, successor) >= 0.8  # learns as well as with dense updates
    untouched = model.net_.item_embedding.weight[0]  # the padding row never moves
    assert torch.count_nonzero(untouched) == 0
    # the ordinary full-softmax path stays dense
    assert not SASRecRecommender(epochs=1, loss_type="ce", **FAST).fit(events).net_.item_embedding.sparse


def test_auto_switches_to_sampled_softmax_on_large_catalogues(chains, monkeypatch):
    monkeypatch.setattr(sasrec, "AUTO_CE_MAX_ITEMS", N_ITEMS - 1)
    model = SASRecRecommender(epochs=1, **FAST).fit(chains[0])
    assert model.loss_type_ == "sampled"


def test_same_seed_same_model(chains):
    events, _ = chains
    a = SASRecRecommender(epochs=2, **FAST).fit(events)
    b = SASRecRecommender(epochs=2, **FAST).fit(events)
    np.testing.assert_array_equal(a.score_users(np.arange(5)), b.score_users(np.arange(5)))


# --------------------------------------------------------------------------- the network
def test_attention_is_causal():
    torch.manual_seed(0)
    net = SASRecNet(n_items=20, hidden_dim=16, n_heads=2, n_layers=2, max_length=10, dropout=0.2).eval()
    seq = torch.randint(1, 21, (4, 10))
    seq[0, :3] = 0  # left padding
    changed = seq.clone()
    changed[:, 6] = changed[:, 6] % 20 + 1
    with torch.no_grad():
        before, after = net(seq), net(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6], rtol=0, atol=0)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_left_padding_and_trimming_do_not_change_hidden_states():
    torch.manual_seed(0)
    net = SASRecNet(n_items=20, hidden_dim=16, n_heads=2, n_layers=2, max_length=10, dropout=0.0).eval()
    full = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 5, 7, 9]])
    with torch.no_grad():
        torch.testing.assert_close(net(full)[:, -4:], net(full[:, -4:]), rtol=1e-5, atol=1e-6)
        assert torch.isfinite(net(full)).all()  # padded rows attend to themselves, never NaN


# --------------------------------------------------------------------------- array helpers
def test_training_windows_hold_every_next_item_pair_exactly_once():
    max_length = 4
    lengths = np.array([1, 2, 4, 5, 6, 9, 17, 0, 3])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.arange(offsets[-1])  # every position distinct, so a pair names its place
    windows = training_windows(Sequences(items, offsets, np.arange(len(lengths))), max_length)
    assert windows.shape[1] == max_length + 1
    inputs, targets = windows[:, :-1], windows[:, 1:]
    valid = inputs > 0
    got = sorted(zip((inputs[valid] - 1).tolist(), (targets[valid] - 1).tolist(), strict=True))
    expected = sorted(
        (int(items[o + k]), int(items[o + k + 1]))
        for o, n in zip(offsets[:-1], lengths, strict=True) for k in range(n - 1)
    )
    assert got == expected  # each pair once (sorted lists, duplicates would show)
    for row in windows:  # left-padded, then a contiguous run of one sequence
        kept = row[row > 0] - 1
        assert (row[: max_length + 1 - len(kept)] == 0).all()
        assert np.array_equal(np.diff(kept), np.ones(len(kept) - 1))
        assert np.searchsorted(offsets, kept[0], "right") == np.searchsorted(offsets, kept[-1], "right")


def test_epoch_batches_cover_every_training_pair(trained, chains):
    events, _ = chains
    n_pairs = len(events) - events["visitor_id"].nunique()
    batches = list(trained._batches(np.random.default_rng(0)))
    assert len(batches) == trained._n_batches()
    assert sum(int((inputs > 0).sum()) for inputs, _ in batches) == n_pairs
    assert all(((inputs > 0) <= (targets > 0)).all() for inputs, targets in batches)


def test_left_padded_keeps_the_last_items():
    seqs = Sequences(np.array([4, 5, 6, 7, 8, 9]), np.array([0, 1, 1, 6]), np.arange(3))
    np.testing.assert_array_equal(left_padded(seqs, 3), [[0, 0, 5], [0, 0, 0], [8, 9, 10]])


@pytest.mark.parametrize("loss_type", ["ce", "sampled"])
def test_chunked_loss_equals_unchunked(chains, monkeypatch, loss_type):
    model = SASRecRecommender(epochs=1, loss_type=loss_type, n_negatives=10, **{**FAST, "dropout": 0.0})
    model.fit(chains[0])
    model.net_.train()
    batch = next(model._batches(np.random.default_rng(0)))

    def loss_and_grad():
        torch.manual_seed(3)
        model.net_.zero_grad()
        loss = model._loss(batch)
        loss.backward()
        return loss.detach(), model.net_.item_embedding.weight.grad.clone()

    whole = loss_and_grad()
    monkeypatch.setattr(sasrec, "LOSS_BLOCK_FLOATS", 64 * N_ITEMS)  # forces many chunks
    chunked = loss_and_grad()
    torch.testing.assert_close(whole[0], chunked[0])
    torch.testing.assert_close(whole[1], chunked[1])


# --------------------------------------------------------------------------- scoring, persistence
def test_long_session_is_truncated_to_max_seq_length(trained):
    long = np.arange(60) % N_ITEMS
    tail = long[-trained.max_seq_length :]
    scores = trained.score_sessions(Sequences(long, np.array([0, 60]), np.zeros(1)))
    expected = trained.score_sessions(Sequences(tail, np.array([0, len(tail)]), np.zeros(1)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_similar_items_use_item_embeddings_without_padding(trained, chains):
    assert trained._item_vectors().shape == (N_ITEMS, trained.hidden_dim)
    some_item = next(iter(chains[1]))
    similar = trained.get_similar_items(some_item, n_items=5)
    assert len(similar) == 5 and some_item not in similar.item_ids


def test_cold_start_answers_with_popular_items(trained):
    assert trained.recommend(-1, n_items=3).is_fallback
    assert trained.recommend_by_item_ids([-5], n_items=3).is_fallback


def test_save_load_round_trip(trained, tmp_path, chains):
    loaded = Recommender.load(trained.save(tmp_path / "sasrec"))
    assert isinstance(loaded, SASRecRecommender)
    assert loaded.get_params() == trained.get_params()
    users = np.arange(len(trained.visitor_map_))
    np.testing.assert_array_equal(loaded.score_users(users), trained.score_users(users))
    session = list(chains[1])[:4]
    assert loaded.recommend_by_item_ids(session) == trained.recommend_by_item_ids(session)
    assert loaded.get_similar_items(session[0]) == trained.get_similar_items(session[0])


def test_model_saved_before_categories_and_pooling_loads_as_it_scored(chains_with_categories, tmp_path):
    """A config.json from before use_categories/history_pooling existed: the file has no
    category table and scored visitors by the last position."""
    import json

    model = SASRecRecommender(epochs=2, use_categories=False, history_pooling="last",
                              **FAST).fit(chains_with_categories)
    path = model.save(tmp_path / "sasrec_old")
    config = json.loads((path / "config.json").read_text())
    del config["params"]["use_categories"], config["params"]["history_pooling"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = Recommender.load(path)
    assert loaded.get_params() == model.get_params()
    users = np.arange(len(model.visitor_map_))
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))


def test_model_loaded_under_inference_mode_scores_and_keeps_trainable_parameters(chains_with_categories, tmp_path):
    model = SASRecRecommender(epochs=1, **FAST).fit(chains_with_categories)
    path = model.save(tmp_path / "sasrec_inference")
    users = np.arange(len(model.visitor_map_))
    with torch.inference_mode():
        loaded = Recommender.load(path)
        np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))
    assert not any(p.is_inference() for p in loaded.net_.parameters())
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))


# --------------------------------------------------------------------------- arguments
def test_bad_loss_type_names_the_allowed_values():
    with pytest.raises(ValueError, match="'auto', 'ce', 'sampled', 'gbce'"):
        SASRecRecommender(loss_type="bpr")


def test_bad_history_pooling_names_the_allowed_values():
    with pytest.raises(ValueError, match="'mean', 'last'"):
        SASRecRecommender(history_pooling="max")


@pytest.mark.parametrize("kwargs", [{"hidden_dim": 30, "n_heads": 4}, {"max_seq_length": 0},
                                    {"dropout": 1.0}, {"gbce_t": 2.0}, {"epochs": True}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SASRecRecommender(**kwargs)


def test_visitors_with_single_events_only_cannot_train():
    frame = pd.DataFrame({"timestamp": [1, 2], "visitor_id": [1, 2], "event": "view", "item_id": [3, 4]})
    with pytest.raises(ValueError, match="two or more events"):
        SASRecRecommender(epochs=1, show_progress=False, device="cpu").fit(to_canonical(frame))
