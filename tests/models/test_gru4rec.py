"""GRU4Rec: learns item chains with each loss, trains session-parallel as the official code does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conformance import RecommenderConformance

from funnelrec.data.encoding import Sequences
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models.base import Recommender
from funnelrec.models.sequential.gru4rec import (
    GRU4RecNet,
    GRU4RecRecommender,
    IndexedAdagradM,
    PopularitySampler,
    session_parallel_batches,
)

N_ITEMS = 30


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Steps of a few dozen rows gain nothing from threads and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

FAST = {"embedding_dim": 16, "hidden_dim": 32, "batch_size": 32, "n_sample": 8, "dropout": 0.0,
        "show_progress": False, "seed": 7, "device": "cpu"}


def item_id(i: np.ndarray | int) -> np.ndarray | int:
    return i * 7 + 100  # external ids that are not dense indices


@pytest.fixture(scope="module")
def chains() -> tuple[pd.DataFrame, dict[int, int]]:
    """200 visitors, two sessions each, walking a fixed cycle of 30 items from random starts."""
    rng = np.random.default_rng(0)
    cycle = rng.permutation(N_ITEMS)
    n_sessions = 400
    lengths = rng.integers(3, 10, n_sessions)
    starts = rng.integers(0, N_ITEMS, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = cycle[(np.repeat(starts, lengths) + step) % N_ITEMS]
    visitor = session // 2  # sessions 2v and 2v+1, three hours apart
    frame = pd.DataFrame({
        "timestamp": 1_600_000_000_000 + visitor * 100_000_000 + (session % 2) * 10_800_000 + step * 60_000,
        "visitor_id": visitor + 500,
        "event": "view",
        "item_id": item_id(items),
    })
    events = SessionBuilder().build_sessions(to_canonical(frame))
    assert events["session_id"].nunique() == n_sessions
    successor = {int(item_id(cycle[i])): int(item_id(cycle[(i + 1) % N_ITEMS])) for i in range(N_ITEMS)}
    return events, successor


@pytest.fixture(scope="module")
def trained(chains) -> GRU4RecRecommender:
    return GRU4RecRecommender(epochs=8, learning_rate=0.01, **FAST).fit(chains[0])


def successor_accuracy(model: Recommender, successor: dict[int, int]) -> float:
    hits = [model.recommend_by_item_ids([a], n_items=1)[0][0] == b for a, b in successor.items()]
    return float(np.mean(hits))


class TestGRU4RecConformance(RecommenderConformance):
    def make_model(self):
        return GRU4RecRecommender(epochs=2, learning_rate=0.01, **FAST)


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    ("loss_type", "optimizer", "learning_rate", "extra"),
    [
        ("ce", "adam", 0.01, {}),
        ("bpr-max", "adam", 0.01, {}),
        ("top1-max", "adam", 0.01, {}),
        ("ce", "adagrad", 0.1, {"constrained_embedding": True, "embedding_dim": 0, "dropout_p_embed": 0.1}),
        ("bpr-max", "adagrad", 0.1, {"momentum": 0.3, "elu_param": 0.5, "n_sample": 0}),
    ],
)
def test_each_loss_learns_the_chains(chains, loss_type, optimizer, learning_rate, extra):
    events, successor = chains
    params = {**FAST, **extra}
    model = GRU4RecRecommender(
        epochs=6, loss_type=loss_type, optimizer=optimizer, learning_rate=learning_rate, **params
    ).fit(events)
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    assert successor_accuracy(model, successor) >= 0.9  # chance is 1/30


def test_longer_session_predicts_successor_of_its_last_item(trained, chains):
    _, successor = chains
    assert successor_accuracy(trained, successor) >= 0.9
    first = next(iter(successor))
    walk = [first, successor[first], successor[successor[first]]]
    assert trained.recommend_by_item_ids(walk, n_items=1)[0][0] == successor[walk[-1]]


def test_visitor_recommendation_continues_the_last_session(trained, chains):
    events, successor = chains
    last = events.sort_values("timestamp").groupby("visitor_id")["item_id"].last()
    item_ids, _ = trained.recommend_batch(last.index.to_numpy(), n_items=1, exclude_seen=False)
    assert np.mean(item_ids[:, 0] == last.map(successor).to_numpy()) >= 0.9
    # the stored history is the visitor's most recent session only
    visitor = int(last.index[0])
    last_session = events.loc[events.visitor_id == visitor].sort_values("timestamp")
    last_session = last_session[last_session.session_id == last_session.session_id.iloc[-1]]
    v = trained.visitor_map_.to_idx([visitor])[0]
    stored = trained.history_items_[trained.history_offsets_[v] : trained.history_offsets_[v + 1]]
    np.testing.assert_array_equal(trained.item_map_.to_ids(stored), last_session.item_id.to_numpy())


def test_similar_items_use_output_embeddings(trained):
    vectors = trained._item_vectors()
    assert vectors.shape == (N_ITEMS, trained.hidden_dim)
    item = int(trained.item_ids[0])
    similar = trained.get_similar_items(item, n_items=3)
    assert len(similar) == 3 and item not in similar.item_ids


# --------------------------------------------------------------------------- session-parallel batches
def test_session_parallel_batches_reset_at_starts_and_cover_every_pair_once():
    lengths = np.array([2, 5, 3, 2, 7, 4, 2, 3, 6, 2])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    session_of = np.repeat(np.arange(len(lengths)), lengths)
    order = np.random.default_rng(1).permutation(len(lengths))
    steps = list(session_parallel_batches(offsets, 3, order))
    seen: list[int] = []
    previous: np.ndarray | None = None
    entered: list[int] = []
    for step in steps:
        pos = step.positions
        assert len(pos) == len(step.reset) <= 3
        # each (input, target) pair is a consecutive pair of one session
        assert (session_of[pos] == session_of[pos + 1]).all()
        # reset exactly where the input is the first event of its session
        np.testing.assert_array_equal(step.reset, pos == offsets[session_of[pos]])
        entered.extend(session_of[pos[step.reset]].tolist())
        if previous is not None:
            carried = previous if step.carry is None else previous[step.carry]
            assert len(carried) == len(pos)
            # a row that is not reset continues its own session one event later
            np.testing.assert_array_equal(pos[~step.reset], carried[~step.reset] + 1)
        else:
            assert step.reset.all() and step.carry is None
        previous = pos
        seen.extend(pos.tolist())
    expected = [p for p in range(offsets[-1]) if p + 1 < offsets[session_of[p] + 1]]
    assert sorted(seen) == expected  # every pair exactly once
    assert entered == order.tolist()  # sessions enter in the given order
    assert len(previous) < 3 and any(step.carry is not None for step in steps)  # shrinks at the end


def test_session_parallel_batches_reject_single_event_sessions():
    with pytest.raises(ValueError, match="at least two"):
        list(session_parallel_batches(np.array([0, 2, 3]), 2))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_training_hidden_state_equals_running_each_session_alone(chains, n_layers):
    """Reset, carry and detach give at every step the state of the session's own prefix (the
    layer-by-layer training step equals the packed GRU of inference)."""
    model = GRU4RecRecommender(epochs=1, learning_rate=0.01, n_layers=n_layers, **{**FAST, "batch_size": 7})
    model.fit(chains[0])
    outputs = []
    step_fn = model.net_.step

    def spy(items, hidden):
        out, new = step_fn(items, hidden)
        outputs.append(out)
        return out, new

    model.net_.step = spy
    model.net_.eval()
    model._on_epoch_start(1)
    with torch.no_grad():
        for batch in model._batches(np.random.default_rng(0)):
            model._loss(batch)
    del model.net_.step
    offsets = model._train_offsets
    session_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    steps = list(session_parallel_batches(offsets, 7))
    assert len(steps) == len(outputs)
    for k in (0, 1, 5, len(steps) // 2, len(steps) - 1):
        pos = steps[k].positions
        starts = offsets[session_of[pos]]
        lengths = pos - starts + 1
        prefixes = Sequences(
            np.concatenate([model._train_items[s : p + 1] for s, p in zip(starts, pos, strict=True)]),
            np.concatenate([[0], np.cumsum(lengths)]),
            np.arange(len(pos)),
        )
        order = np.argsort(-lengths, kind="stable")
        padded = np.zeros((len(pos), lengths.max()), dtype=np.int64)
        for r, row in enumerate(order):
            padded[r, : lengths[row]] = prefixes.get(row)
        with torch.no_grad():
            alone = model.net_.encode(torch.from_numpy(padded), torch.from_numpy(lengths[order]))
        torch.testing.assert_close(outputs[k][order], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_hidden_dropout_is_carried_to_the_next_step_as_in_the_official_code(n_layers):
    torch.manual_seed(0)
    net = GRU4RecNet(n_items=20, embedding_dim=8, hidden_dim=16, n_layers=n_layers, dropout=0.5,
                     dropout_p_embed=0.0, constrained_embedding=False, sparse=True).train()
    hidden = torch.rand(n_layers, 64, 16)
    out, new = net.step(torch.randint(0, 20, (64,)), hidden)
    torch.testing.assert_close(new[-1], out, rtol=0, atol=0)  # the dropped output is the state
    for layer in range(n_layers):
        assert (new[layer] == 0).float().mean() > 0.3  # about half of every layer's state dropped
    net.eval()
    out, new = net.step(torch.arange(4), torch.zeros(n_layers, 4, 16))
    assert (out != 0).all()  # no dropout at inference


def test_sessions_enter_training_in_start_time_order(trained, chains):
    events, _ = chains
    first = events.sort_values("timestamp").groupby("session_id").head(1)
    by_time = first.sort_values("timestamp", kind="stable")["item_id"].to_numpy()
    heads = trained.item_map_.to_ids(trained._train_items[trained._train_offsets[:-1]])
    np.testing.assert_array_equal(heads, by_time)


# --------------------------------------------------------------------------- sampling, loss, optimiser
def test_popularity_sampler_follows_popularity_to_the_alpha():
    counts = np.array([1.0, 4.0, 16.0, 64.0])
    sampler = PopularitySampler(counts, 0.5, 1000, np.random.default_rng(0), torch.device("cpu"))
    draws = torch.cat([sampler.sample() for _ in range(200)]).numpy()
    assert draws.min() >= 0 and draws.max() <= 3
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, np.sqrt(counts) / np.sqrt(counts).sum(), atol=0.01)
    assert len(sampler.sample()) == 1000


def test_cross_entropy_subtracts_log_sampling_probability(trained):
    logits = torch.randn(3, 5)
    targets, samples = torch.tensor([0, 4, 7]), torch.tensor([1, 7])
    counts = torch.exp(trained._log_counts)
    log_q = torch.log(torch.cat([counts[targets], counts[samples] ** trained.sample_alpha]))
    expected = F.cross_entropy(logits - log_q, torch.arange(3), reduction="sum")
    torch.testing.assert_close(trained._output_loss(logits, targets, samples), expected)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_indexed_adagrad_sparse_update_touches_only_its_rows(momentum):
    torch.manual_seed(0)
    dense = torch.nn.Parameter(torch.randn(6, 3))
    sparse = torch.nn.Parameter(dense.detach().clone())
    opt_dense = IndexedAdagradM([dense], lr=0.1, momentum=momentum)
    opt_sparse = IndexedAdagradM([sparse], lr=0.1, momentum=momentum)
    before = sparse.detach().clone()
    for rows in ([0, 2, 2], [0, 2], [2]):
        idx = torch.tensor(rows)
        for p, opt, is_sparse in ((dense, opt_dense, False), (sparse, opt_sparse, True)):
            opt.zero_grad()
            F.embedding(idx, p, sparse=is_sparse).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(sparse[[1, 3, 4, 5]], before[[1, 3, 4, 5]], rtol=0, atol=0)
    # row 2 got a gradient at every step, so momentum sees the same history both ways
    torch.testing.assert_close(dense[2], sparse[2])
    if momentum == 0:  # without momentum, untouched rows of the dense update do not move either
        torch.testing.assert_close(dense, sparse)
    # the first step of plain Adagrad: p - lr * g / sqrt(g**2 + eps)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = IndexedAdagradM([p], lr=0.1)
    p.sum().backward()
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0]) - 0.1 / np.sqrt(1 + 1e-6))


# --------------------------------------------------------------------------- arguments, persistence
@pytest.mark.parametrize(
    "bad",
    [{"loss_type": "bpr"}, {"optimizer": "sgd"}, {"hidden_dim": 0}, {"dropout": 1.0},
     {"n_sample": -1}, {"embedding_dim": 0}, {"learning_rate": 0}],
)
def test_bad_arguments_rejected(bad):
    with pytest.raises(ValueError):
        GRU4RecRecommender(**bad)


def test_save_load_gives_identical_scores(trained, tmp_path):
    loaded = Recommender.load(trained.save(tmp_path / "gru4rec"))
    assert isinstance(loaded, GRU4RecRecommender) and loaded.get_params() == trained.get_params()
    sessions = Sequences(np.array([0, 1, 2, 5, 5, 3]), np.array([0, 3, 4, 6]), np.arange(3))
    np.testing.assert_array_equal(loaded.score_sessions(sessions), trained.score_sessions(sessions))
    users = np.arange(len(trained.visitor_map_))
    np.testing.assert_array_equal(loaded.score_users(users), trained.score_users(users))
    np.testing.assert_array_equal(loaded._item_vectors(), trained._item_vectors())
