"""Synthetic e-commerce logs in the exact RetailRocket (Kaggle) format, with their ground truth.

The embedded default data of funnelrec: demos, tests and benchmarks run on it when no real
RetailRocket files are at hand. It is a simulation with structure a model can learn, and the
generator keeps the truth it was drawn from:

- a category tree (``n_roots`` roots, depth up to ~5, mostly 2-3), items in its leaves with
  Zipf-like category sizes;
- items with a root-dependent log-normal price, a latent appeal and a Zipf-like popularity
  (``rank ** -a * exp(b * appeal)``);
- for every item ``K`` likely successors with decreasing probabilities, most in its own
  category, the rest elsewhere under the same root: "after A, B is likely";
- visitors with a preferred (and a secondary) category and a purchase propensity; most make one
  short visit, a minority returns over weeks with several sessions that start in their
  preferred categories;
- sessions that walk the catalogue: successor of the current item, a repeat view, an item of
  the preferred category or a globally popular one;
- a funnel: a viewed item is added to the cart with a probability driven by the visitor's
  propensity, the item's appeal and relative price and by repeat views; a carted item is bought
  with a probability driven by visitor and item; one transaction id per purchasing session;
- time between 2015-05-03 and 2015-09-18 with a daily and a weekly rhythm, gaps of seconds to
  minutes inside a session (always under 20 minutes) and more than an hour between sessions,
  so a 30-minute-timeout sessionizer recovers the generated sessions exactly.

Everything is drawn with one ``np.random.default_rng(seed)`` and vectorised with numpy: the only
Python loops run over session steps, tree levels, successor slots and retry rounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from funnelrec.data.schema import (
    CATEGORY_ID,
    EVENT,
    EVENT_DTYPE,
    EVENT_TYPES,
    ITEM_ID,
    SESSION_ID,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    TRANSACTION_ID,
    VISITOR_ID,
)

__all__ = [
    "BEGIN_MS",
    "END_MS",
    "SCALES",
    "ScaleConfig",
    "SyntheticData",
    "describe",
    "format_description",
    "generate",
    "generate_to_dir",
    "write",
]

BEGIN_MS = 1_430_622_000_000
"""Start of the simulated period: 2015-05-03 03:00 UTC (as RetailRocket)."""
END_MS = 1_442_545_200_000
"""End of the simulated period: 2015-09-18 03:00 UTC (as RetailRocket)."""

_SECOND_MS = 1_000
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_MAX_VIEW_GAP_MS = 20 * _MINUTE_MS  # longest pause between two views of a session
_MAX_CART_TAIL_MS = 5 * _MINUTE_MS  # longest add-to-cart delay after a session's last view
_MAX_CHECKOUT_MS = 10 * _MINUTE_MS  # longest checkout delay after a session's last event
_SESSION_RESERVE_MS = _MAX_CART_TAIL_MS + _MAX_CHECKOUT_MS  # a session's tail after its last view
_MIN_IDLE_MS = 65 * _MINUTE_MS  # shortest pause between two sessions of a visitor (> 1 hour)

# Relative traffic by hour of day (UTC) and by day of week (Monday first): an evening peak for
# American time zones and a quiet weekend, the shape of RetailRocket's logs.
_HOURLY = (
    0.80, 0.76, 0.77, 0.80, 0.83, 0.74, 0.42, 0.26, 0.10, 0.10, 0.11, 0.10,
    0.15, 0.33, 0.41, 0.60, 0.69, 0.92, 0.82, 1.00, 0.93, 0.96, 0.76, 0.71,
)  # fmt: skip
_WEEKLY = (1.15, 1.13, 1.09, 1.00, 0.88, 0.80, 0.95)
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)

# Share of non-root categories at depth 1, 2, 3, ... (RetailRocket: 174, 702, 665, 90, 13).
_LEVEL_SHARES = (0.106, 0.427, 0.405, 0.055, 0.007)

_ITEM_PROPERTY_COLUMNS = ("timestamp", "itemid", "property", "value")
_EVENT_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
_TREE_COLUMNS = ("categoryid", "parentid")


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleConfig:
    """Size and behaviour of one synthetic shop.

    The sizes (``n_*``) are what changes between scales; the behaviour parameters default to
    values tuned to RetailRocket's shape (1.96 events per visitor, 96.7% views, 2.5% add-to-cart,
    0.8% transactions).
    """

    name: str
    n_visitors: int
    n_items: int
    n_categories: int
    n_roots: int
    # catalogue
    popularity_exponent: float = 0.6
    """Zipf exponent of item popularity (``rank ** -a``)."""
    appeal_popularity: float = 0.5
    """How much latent appeal raises popularity (``exp(b * appeal)``)."""
    successor_probs: tuple[float, ...] = (0.45, 0.27, 0.17, 0.11)
    """Probability of each of an item's successors, given that the walk follows a successor."""
    p_successor_same_category: float = 0.8
    """Share of successors drawn from the item's own category (the rest: same root)."""
    # the walk through a session
    p_successor: float = 0.6
    """Next view is one of the current item's successors."""
    p_repeat: float = 0.1
    """Next view is the current item again."""
    p_preferred: float = 0.15
    """Next view is an item of the visitor's preferred categories (the rest: global popularity)."""
    p_start_preferred: float = 0.7
    """A session's first view is in the visitor's preferred categories (else global popularity)."""
    p_secondary: float = 0.25
    """Share of preferred-category picks that go to the visitor's secondary category."""
    # visitors and sessions
    return_rate: float = 0.08
    """Share of visitors who come back (two sessions or more)."""
    mean_sessions_returning: float = 3.0
    """Mean number of sessions of a returning visitor (geometric, at least 2)."""
    max_sessions: int = 40
    mean_session_length: float = 1.40
    """Mean number of views in the one session of a one-visit visitor (geometric, at least 1)."""
    mean_session_length_returning: float = 2.2
    """Mean number of views in a session of a returning visitor."""
    max_session_length: int = 200
    shopping_share: float = 0.03
    """Share of sessions with a shopping intent: longer, with several add-to-carts and purchases."""
    mean_session_length_shopping: float = 4.0
    # funnel
    cart_rate: float = 0.026
    """Add-to-carts per view (RetailRocket: 69,332 / 2,664,312)."""
    purchase_rate: float = 0.324
    """Transactions per add-to-cart (RetailRocket: 22,457 / 69,332)."""
    stale_category_share: float = 0.05
    """Share of items whose properties also hold an older, different ``categoryid`` row."""

    def __post_init__(self) -> None:
        for name in ("n_visitors", "n_items", "n_categories", "n_roots"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScaleConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_categories <= self.n_roots:
            raise ValueError(
                f"ScaleConfig.n_categories ({self.n_categories}) must exceed n_roots ({self.n_roots})"
            )
        if self.n_items <= len(self.successor_probs):
            raise ValueError(
                f"ScaleConfig.n_items ({self.n_items}) must exceed the number of successors "
                f"({len(self.successor_probs)})"
            )
        probs = np.asarray(self.successor_probs, dtype=np.float64)
        if probs.size == 0 or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(
                f"ScaleConfig.successor_probs must be >= 0 and sum to 1, got {self.successor_probs}"
            )
        for name in (
            "p_successor_same_category", "p_successor", "p_repeat", "p_preferred",
            "p_start_preferred", "p_secondary", "return_rate", "shopping_share", "cart_rate", "purchase_rate",
            "stale_category_share",
        ):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ScaleConfig.{name} must be in [0, 1], got {value}")
        walk = self.p_successor + self.p_repeat + self.p_preferred
        if walk > 1.0 + 1e-12:
            raise ValueError(f"p_successor + p_repeat + p_preferred must be <= 1, got {walk}")
        if (
            min(
                self.mean_session_length,
                self.mean_session_length_returning,
                self.mean_session_length_shopping,
            )
            < 1
        ):
            raise ValueError("mean session lengths must be >= 1")
        if self.mean_sessions_returning <= 2 - 1e-12 and self.return_rate > 0:
            raise ValueError(
                f"mean_sessions_returning must be > 2, got {self.mean_sessions_returning}"
            )
        if self.max_session_length < 1 or self.max_sessions < 2:
            raise ValueError("max_session_length must be >= 1 and max_sessions >= 2")
        if self.popularity_exponent < 0:
            raise ValueError(f"popularity_exponent must be >= 0, got {self.popularity_exponent}")

    @property
    def n_successors(self) -> int:
        return len(self.successor_probs)


SCALES: dict[str, ScaleConfig] = {
    # unit tests: ~10k events, generated in a few tens of milliseconds
    "tiny": ScaleConfig("tiny", n_visitors=5_000, n_items=400, n_categories=40, n_roots=5),
    # demo and CI: ~300k events, models train in minutes on two cores
    "demo": ScaleConfig("demo", n_visitors=153_000, n_items=10_000, n_categories=400, n_roots=12),
    # RetailRocket's size: 1.41M visitors, 235k items, 1,669 categories, ~2.76M events
    "full": ScaleConfig(
        "full", n_visitors=1_407_580, n_items=235_061, n_categories=1_669, n_roots=25
    ),
}


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticData:
    """Raw RetailRocket-format frames plus the ground truth they were drawn from.

    Attributes
    ----------
    events:
        ``timestamp`` (int64 ms epoch), ``visitorid``, ``event`` (str), ``itemid``,
        ``transactionid`` (Int64, set on transactions only); sorted by timestamp.
    item_properties:
        ``timestamp``, ``itemid``, ``property``, ``value`` (both str), sorted by timestamp.
    category_tree:
        ``categoryid``, ``parentid`` (Int64, missing for roots).
    items:
        Ground truth, one row per catalogue item, sorted by ``item_id``: ``item_id``,
        ``category_id`` (the true, latest one), ``root_category_id``, ``price``, ``appeal``,
        ``popularity_weight`` (sums to 1).
    successors:
        ``(n_items, K)`` item ids, row ``i`` the successors of ``items.item_id[i]`` in
        decreasing probability ``successor_probs``.
    successor_probs:
        ``(K,)`` probability of each successor rank given that the walk follows a successor.
    visitors:
        Ground truth, one row per visitor (``visitor_id`` = row number): ``visitor_id``,
        ``preferred_category_id``, ``secondary_category_id``, ``purchase_propensity``,
        ``n_sessions``, ``is_returning``.
    session_ids:
        ``(len(events),)`` int64, the generated session of each event row, numbered in order of
        first appearance.
    config, seed:
        What the data was generated from.
    """

    events: pd.DataFrame
    item_properties: pd.DataFrame
    category_tree: pd.DataFrame
    items: pd.DataFrame
    successors: np.ndarray
    successor_probs: np.ndarray
    visitors: pd.DataFrame
    session_ids: np.ndarray
    config: ScaleConfig
    seed: int

    def successor_frame(self) -> pd.DataFrame:
        """The successor truth as a long frame: ``item_id, successor_item_id, rank, probability``."""
        n, k = self.successors.shape
        return pd.DataFrame(
            {
                "item_id": np.repeat(self.items["item_id"].to_numpy(), k),
                "successor_item_id": self.successors.ravel(),
                "rank": np.tile(np.arange(k, dtype=np.int64), n),
                "probability": np.tile(self.successor_probs, n),
            }
        )

    def item_category(self, item_ids: np.ndarray) -> np.ndarray:
        """True category id of each of ``item_ids`` (all must be catalogue items)."""
        catalogue = self.items["item_id"].to_numpy()
        idx = np.searchsorted(catalogue, item_ids)
        idx = np.clip(idx, 0, catalogue.size - 1)
        bad = catalogue[idx] != item_ids
        if bad.any():
            raise KeyError(
                f"{int(bad.sum())} item ids not in the catalogue, e.g. {np.asarray(item_ids)[bad][:5].tolist()}"
            )
        return self.items["category_id"].to_numpy()[idx]

    def canonical_events(self, *, with_sessions: bool = True) -> pd.DataFrame:
        """The events in the canonical schema (see ``data/schema.py``), without touching disk.

        ``category_id`` is each item's true category; ``session_id`` (when asked for) is the
        generated session, which a 30-minute SessionBuilder recovers exactly (up to numbering).
        """
        raw = self.events
        out = pd.DataFrame(
            {
                TIMESTAMP: pd.to_datetime(raw["timestamp"].to_numpy(), unit="ms", utc=True).astype(
                    TIMESTAMP_DTYPE
                ),
                VISITOR_ID: raw["visitorid"].to_numpy(dtype=np.int64),
                EVENT: pd.Categorical(raw["event"].to_numpy(dtype=object), dtype=EVENT_DTYPE),
                ITEM_ID: raw["itemid"].to_numpy(dtype=np.int64),
                TRANSACTION_ID: raw["transactionid"].astype(pd.Int64Dtype()).array,
                CATEGORY_ID: pd.array(
                    self.item_category(raw["itemid"].to_numpy()), dtype=pd.Int64Dtype()
                ),
            }
        )
        if with_sessions:
            out[SESSION_ID] = self.session_ids.astype(np.int64)
        return out


# --------------------------------------------------------------------------------------------
# vectorised sampling helpers
# --------------------------------------------------------------------------------------------


class _GroupSampler:
    """Draw members with probability proportional to a weight, within a given group, vectorised.

    Members are sorted by group once; a draw for group ``g`` is a binary search of
    ``lo[g] + u * total[g]`` in the global cumulative weight.
    """

    def __init__(self, group_of_member: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        order = np.argsort(group_of_member, kind="stable")
        self.members = order
        self.cum = np.cumsum(weights[order], dtype=np.float64)
        counts = np.bincount(group_of_member, minlength=n_groups)
        self.end = np.cumsum(counts)
        self.start = self.end - counts
        cum0 = np.concatenate(([0.0], self.cum))
        self.lo = cum0[self.start]
        self.total = cum0[self.end] - self.lo

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One member of each of ``groups`` (groups must hold a positive total weight)."""
        target = self.lo[groups] + rng.random(groups.size) * self.total[groups]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.start[groups], self.end[groups] - 1)
        return self.members[pos]


def _exclusive_group_cumsum(
    values: np.ndarray, group_start: np.ndarray, group_of: np.ndarray
) -> np.ndarray:
    """Cumulative sum of ``values`` before each element, restarted at every group start."""
    csum = np.cumsum(values) - values
    return csum - csum[group_start][group_of]


def _calibrate_intercept(logits: np.ndarray, target_mean: float, rng: np.random.Generator) -> float:
    """Intercept ``c`` with ``mean(sigmoid(c + logits)) == target_mean`` (bisection)."""
    if logits.size == 0:
        return 0.0
    if logits.size > 200_000:
        logits = logits[rng.integers(0, logits.size, 200_000)]
    target_mean = float(np.clip(target_mean, 1e-9, 1 - 1e-9))
    lo, hi = -30.0, 30.0
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(mid + logits)))) < target_mean:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lognormal_ms(
    rng: np.random.Generator, median_ms: float, sigma: float, size: int
) -> np.ndarray:
    return np.exp(np.log(median_ms) + sigma * rng.standard_normal(size))


# --------------------------------------------------------------------------------------------
# the simulation, step by step
# --------------------------------------------------------------------------------------------


@dataclass
class _Tree:
    parent: np.ndarray  # node -> parent node, -1 for roots
    root: np.ndarray  # node -> its root node (roots are nodes 0..n_roots-1)
    ids: np.ndarray  # node -> category id
    leaves: np.ndarray  # node indices of the leaves


def _category_tree(cfg: ScaleConfig, rng: np.random.Generator) -> _Tree:
    n, n_roots = cfg.n_categories, cfg.n_roots
    rest = n - n_roots
    shares = np.asarray(_LEVEL_SHARES)
    raw = shares / shares.sum() * rest
    sizes = np.floor(raw).astype(np.int64)
    sizes[np.argsort(sizes - raw, kind="stable")[: rest - int(sizes.sum())]] += 1
    sizes = sizes[sizes > 0]

    parent = np.full(n, -1, dtype=np.int64)
    root = np.arange(n, dtype=np.int64)
    previous = np.arange(n_roots)
    start = n_roots
    for level, size in enumerate(sizes):
        nodes = np.arange(start, start + size)
        weights = rng.gamma(0.8, size=previous.size) + 1e-3
        parents = previous[rng.choice(previous.size, size=size, p=weights / weights.sum())]
        if level == 0:  # every root gets at least one child where there are enough
            cover = min(size, n_roots)
            parents[:cover] = rng.permutation(previous)[:cover]
        parent[nodes] = parents
        root[nodes] = root[parents]
        previous, start = nodes, start + size

    id_space = n + max(1, n // 55)  # RetailRocket: 1,669 categories with ids 0..1698
    ids = rng.choice(id_space, size=n, replace=False).astype(np.int64)
    is_parent = np.zeros(n, dtype=bool)
    is_parent[parent[parent >= 0]] = True
    return _Tree(parent=parent, root=root, ids=ids, leaves=np.flatnonzero(~is_parent))


@dataclass
class _Catalogue:
    item_ids: np.ndarray  # sorted ascending; item index i <-> item_ids[i]
    leaf: np.ndarray  # item -> leaf position (index into tree.leaves)
    root: np.ndarray  # item -> root node
    price: np.ndarray
    price_z: np.ndarray  # log price relative to its category, standardised
    appeal: np.ndarray
    popularity: np.ndarray  # sums to 1


def _catalogue(cfg: ScaleConfig, tree: _Tree, rng: np.random.Generator) -> _Catalogue:
    n_items, n_leaves = cfg.n_items, tree.leaves.size
    # Zipf-ish category sizes, every leaf holding at least one item where possible
    leaf_weight = (rng.permutation(n_leaves) + 1.0) ** -0.8 * rng.lognormal(0.0, 0.3, n_leaves)
    cover = min(n_items, n_leaves)
    leaf = np.concatenate(
        (
            rng.permutation(n_leaves)[:cover],
            rng.choice(n_leaves, size=n_items - cover, p=leaf_weight / leaf_weight.sum()),
        )
    )
    leaf = rng.permutation(leaf)
    root = tree.root[tree.leaves[leaf]]

    root_mu = rng.uniform(np.log(600.0), np.log(30_000.0), size=cfg.n_roots)
    leaf_offset = rng.normal(0.0, 0.35, size=n_leaves)
    price_noise = rng.standard_normal(n_items)
    price = np.exp(root_mu[root] + leaf_offset[leaf] + 0.55 * price_noise)
    price = np.maximum(np.round(price / 120.0), 1.0) * 120.0

    appeal = rng.standard_normal(n_items)
    rank = rng.permutation(n_items) + 1.0
    popularity = rank**-cfg.popularity_exponent * np.exp(cfg.appeal_popularity * appeal)
    popularity /= popularity.sum()

    id_space = max(2 * n_items, n_items + 10)  # RetailRocket: 235,061 items with ids 0..466,867
    item_ids = np.sort(rng.choice(id_space, size=n_items, replace=False)).astype(np.int64)
    return _Catalogue(item_ids, leaf, root, price, price_noise, appeal, popularity)


def _successors(
    cfg: ScaleConfig, tree: _Tree, cat: _Catalogue, rng: np.random.Generator
) -> np.ndarray:
    """``(n_items, K)`` successor item indices, distinct per row and never the item itself."""
    n_items, k = cfg.n_items, cfg.n_successors
    weight = cat.popularity**0.75
    by_leaf = _GroupSampler(cat.leaf, weight, tree.leaves.size)
    by_root = _GroupSampler(cat.root, weight, cfg.n_roots)
    everywhere = _GroupSampler(np.zeros(n_items, dtype=np.int64), weight, 1)

    src = np.repeat(np.arange(n_items), k)
    same = rng.random(src.size) < cfg.p_successor_same_category
    succ = np.empty(src.size, dtype=np.int64)
    succ[same] = by_leaf.sample(cat.leaf[src[same]], rng)
    succ[~same] = by_root.sample(cat.root[src[~same]], rng)
    succ = succ.reshape(n_items, k)

    for attempt in range(24):
        bad = succ == np.arange(n_items)[:, None]
        for j in range(1, k):
            bad[:, j] |= (succ[:, :j] == succ[:, j : j + 1]).any(axis=1)
        rows, cols = np.nonzero(bad)
        if rows.size == 0:
            break
        if attempt < 4:  # small categories run out of distinct members: widen the pool
            redraw = np.where(
                same.reshape(n_items, k)[rows, cols],
                by_leaf.sample(cat.leaf[rows], rng),
                by_root.sample(cat.root[rows], rng),
            )
        elif attempt < 8:
            redraw = by_root.sample(cat.root[rows], rng)
        else:
            redraw = everywhere.sample(np.zeros(rows.size, dtype=np.int64), rng)
        succ[rows, cols] = redraw
    return succ


@dataclass
class _Visitors:
    primary: np.ndarray  # leaf position
    secondary: np.ndarray  # leaf position (same root)
    propensity: np.ndarray
    n_sessions: np.ndarray
    returning: np.ndarray


def _visitors(
    cfg: ScaleConfig, tree: _Tree, cat: _Catalogue, rng: np.random.Generator
) -> _Visitors:
    n = cfg.n_visitors
    returning = rng.random(n) < cfg.return_rate
    n_sessions = np.ones(n, dtype=np.int64)
    n_ret = int(returning.sum())
    if n_ret:
        extra = rng.geometric(1.0 / (cfg.mean_sessions_returning - 1.0), size=n_ret)
        n_sessions[returning] = np.minimum(1 + extra, cfg.max_sessions)
    traffic = np.bincount(cat.leaf, weights=cat.popularity, minlength=tree.leaves.size)
    primary = rng.choice(tree.leaves.size, size=n, p=traffic / traffic.sum())
    leaf_root = tree.root[tree.leaves]
    secondary = _GroupSampler(leaf_root, traffic, cfg.n_roots).sample(leaf_root[primary], rng)
    propensity = np.exp(rng.normal(0.0, 0.8, size=n) + 0.5 * returning)
    return _Visitors(primary, secondary, propensity, n_sessions, returning)


def _walk(
    cfg: ScaleConfig,
    cat: _Catalogue,
    succ: np.ndarray,
    vis: _Visitors,
    sess_visitor: np.ndarray,
    length: np.ndarray,
    offset: np.ndarray,
    n_leaves: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Item index of every view, session after session (views of session ``s`` at ``offset[s]:``)."""
    n_sessions = length.size
    by_leaf = _GroupSampler(cat.leaf, cat.popularity, n_leaves)
    everywhere = _GroupSampler(np.zeros(cat.leaf.size, dtype=np.int64), cat.popularity, 1)
    cum_q = np.cumsum(np.asarray(cfg.successor_probs, dtype=np.float64))
    cum_q[-1] = 1.0
    items = np.empty(int(length.sum()), dtype=np.int64)

    def preferred(visitors: np.ndarray) -> np.ndarray:
        second = rng.random(visitors.size) < cfg.p_secondary
        leaves = np.where(second, vis.secondary[visitors], vis.primary[visitors])
        return by_leaf.sample(leaves, rng)

    def popular(n: int) -> np.ndarray:
        return everywhere.sample(np.zeros(n, dtype=np.int64), rng)

    # the first view of each session
    first = np.empty(n_sessions, dtype=np.int64)
    in_pref = rng.random(n_sessions) < cfg.p_start_preferred
    first[in_pref] = preferred(sess_visitor[in_pref])
    first[~in_pref] = popular(int((~in_pref).sum()))
    items[offset] = first

    # then step by step; sessions sorted by length so the active ones are a prefix
    order = np.argsort(-length, kind="stable")
    sorted_len = length[order]
    cur = first[order]
    visitor = sess_visitor[order]
    pos0 = offset[order]
    t_succ = cfg.p_successor
    t_rep = t_succ + cfg.p_repeat
    t_pref = t_rep + cfg.p_preferred
    neg_len = -sorted_len
    step = 1
    while True:
        n_active = int(np.searchsorted(neg_len, -step, side="left"))  # sessions longer than step
        if n_active == 0:
            break
        c = cur[:n_active]
        u = rng.random(n_active)
        nxt = np.empty(n_active, dtype=np.int64)
        m = u < t_succ
        rank = np.searchsorted(cum_q, rng.random(int(m.sum())), side="right")
        nxt[m] = succ[c[m], np.minimum(rank, cum_q.size - 1)]
        m = (u >= t_succ) & (u < t_rep)
        nxt[m] = c[m]
        m = (u >= t_rep) & (u < t_pref)
        nxt[m] = preferred(visitor[:n_active][m])
        m = u >= t_pref
        nxt[m] = popular(int(m.sum()))
        cur[:n_active] = nxt
        items[pos0[:n_active] + step] = nxt
        step += 1
    return items


def _rhythm_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` ms timestamps in the period, following the daily and weekly rhythm."""
    hours = np.arange(BEGIN_MS, END_MS, _HOUR_MS, dtype=np.int64)
    hour_of_day = (hours // _HOUR_MS) % 24
    weekday = (hours // _DAY_MS + _EPOCH_WEEKDAY) % 7
    weight = np.asarray(_HOURLY)[hour_of_day] * np.asarray(_WEEKLY)[weekday]
    picked = rng.choice(hours.size, size=size, p=weight / weight.sum())
    return hours[picked] + rng.integers(0, _HOUR_MS, size=size)


def _session_times(
    cfg: ScaleConfig,
    vis: _Visitors,
    sess_visitor: np.ndarray,
    visitor_first_sess: np.ndarray,
    length: np.ndarray,
    offset: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """View timestamps (ms), gap to the next view of the same session (ms, 0 after the last), and
    each session's last-view timestamp."""
    n_views = int(length.sum())
    n_sessions = length.size
    view_session = np.repeat(np.arange(n_sessions), length)
    gap = np.clip(_lognormal_ms(rng, 50 * _SECOND_MS, 1.1, n_views), _SECOND_MS, _MAX_VIEW_GAP_MS)
    gap = gap.astype(np.int64)
    gap[offset] = 0  # gap[i]: pause before view i
    within = _exclusive_group_cumsum(gap, offset, view_session) + gap  # ms since session start
    last = offset + length - 1
    duration = within[last]

    # pauses between a visitor's sessions: mostly whole days (same hour of day), some same-day
    days = np.clip(np.round(rng.lognormal(np.log(4.0), 1.0, n_sessions)), 1, 60)
    idle = np.where(
        rng.random(n_sessions) < 0.25,
        rng.uniform(_MIN_IDLE_MS, 8 * _HOUR_MS, n_sessions),
        days * _DAY_MS + rng.normal(0.0, 1.5 * _HOUR_MS, n_sessions),
    )
    idle = np.maximum(idle, _MIN_IDLE_MS)
    is_last = np.zeros(n_sessions, dtype=bool)
    is_last[visitor_first_sess + vis.n_sessions - 1] = True
    idle[is_last] = 0.0
    # keep every visitor's span well inside the period
    busy = np.bincount(sess_visitor, weights=duration + _SESSION_RESERVE_MS)
    idle_sum = np.bincount(sess_visitor, weights=idle)
    room = 0.8 * (END_MS - BEGIN_MS) - busy
    factor = np.where(idle_sum > room, room / np.maximum(idle_sum, 1.0), 1.0)
    idle = np.where(is_last, 0.0, np.maximum(idle * factor[sess_visitor], _MIN_IDLE_MS))
    idle = idle.astype(np.int64)

    step = duration + _SESSION_RESERVE_MS + idle
    rel = _exclusive_group_cumsum(step, visitor_first_sess, sess_visitor)
    visitor_last = visitor_first_sess + vis.n_sessions - 1
    span = rel[visitor_last] + duration[visitor_last] + _SESSION_RESERVE_MS
    # one session of each visitor (chosen at random) starts at a rhythmic anchor time
    anchor = _rhythm_times(rng, cfg.n_visitors)
    pick = visitor_first_sess + np.floor(rng.random(cfg.n_visitors) * vis.n_sessions).astype(
        np.int64
    )
    first_start = anchor - rel[pick]
    latest = END_MS - 1 - span
    outside = (first_start < BEGIN_MS) | (first_start > latest)  # spans cut by the period's ends
    first_start[outside] = BEGIN_MS + (
        rng.random(int(outside.sum())) * (latest[outside] - BEGIN_MS)
    ).astype(np.int64)
    start = first_start[sess_visitor] + rel
    times = start[view_session] + within
    gap_after = np.zeros(n_views, dtype=np.int64)
    gap_after[:-1] = gap[1:]
    gap_after[last] = 0
    return times, gap_after, times[last]


def _funnel(
    cfg: ScaleConfig,
    cat: _Catalogue,
    vis: _Visitors,
    view_item: np.ndarray,
    view_session: np.ndarray,
    view_visitor: np.ndarray,
    view_time: np.ndarray,
    gap_after: np.ndarray,
    session_last_view: np.ndarray,
    shopping: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Add-to-carts (view index, time) and transactions (cart index, time, session)."""
    n_items = cat.item_ids.size
    # a visitor adds an item to the cart at most once per session, at its first view
    key = view_session * n_items + view_item
    _, first_view, n_views_of = np.unique(key, return_index=True, return_counts=True)
    # a session's shopping intent drives its add-to-carts and purchases together, so that some
    # transactions hold several items (RetailRocket: 1.27 items per transaction)
    intent = rng.normal(0.0, 0.8, size=shopping.size) + 2.7 * shopping
    log_prop = np.log(vis.propensity[view_visitor[first_view]])
    it = view_item[first_view]
    logits = (
        1.0 * log_prop
        + 1.0 * intent[view_session[first_view]]
        + 0.7 * cat.appeal[it]
        - 0.5 * cat.price_z[it]
        + 0.8 * (n_views_of > 1)
    )
    n_views = view_item.size
    intercept = _calibrate_intercept(logits, cfg.cart_rate * n_views / max(first_view.size, 1), rng)
    carted = rng.random(first_view.size) < _sigmoid(intercept + logits)
    cart_view = first_view[carted]
    cart_view.sort()

    # the cart lands between the view and the next one, or shortly after the session's last view
    nxt = gap_after[cart_view]
    tail = np.minimum(_lognormal_ms(rng, 40 * _SECOND_MS, 0.8, cart_view.size), _MAX_CART_TAIL_MS)
    delay = np.where(nxt > 0, rng.uniform(0.1, 0.9, cart_view.size) * nxt, tail).astype(np.int64)
    cart_time = view_time[cart_view] + np.maximum(delay, 1)

    # purchases
    it = view_item[cart_view]
    logits = (
        0.8 * np.log(vis.propensity[view_visitor[cart_view]])
        + 1.0 * intent[view_session[cart_view]]
        + 0.4 * cat.appeal[it]
        - 0.4 * cat.price_z[it]
    )
    intercept = _calibrate_intercept(logits, cfg.purchase_rate, rng)
    bought = np.flatnonzero(rng.random(cart_view.size) < _sigmoid(intercept + logits))
    tx_session = view_session[cart_view[bought]]
    # checkout: one moment per purchasing session, after its last view and last add-to-cart
    last_event = session_last_view.copy()
    np.maximum.at(last_event, view_session[cart_view], cart_time)
    checkout = last_event + np.minimum(
        _lognormal_ms(rng, 60 * _SECOND_MS, 0.9, session_last_view.size), _MAX_CHECKOUT_MS
    ).astype(np.int64)
    tx_time = checkout[tx_session]
    return cart_view, cart_time, bought, tx_time, tx_session


def _item_properties(
    cfg: ScaleConfig, tree: _Tree, cat: _Catalogue, rng: np.random.Generator
) -> pd.DataFrame:
    n = cat.item_ids.size
    n_leaves = tree.leaves.size
    mid = (BEGIN_MS + END_MS) // 2

    def when(size: int, lo: int = BEGIN_MS, hi: int = END_MS) -> np.ndarray:
        return rng.integers(lo, hi, size=size, dtype=np.int64)

    def text(values: np.ndarray) -> np.ndarray:
        return values.astype(np.int64).astype(str)

    true_cat = tree.ids[tree.leaves[cat.leaf]]
    stale = (
        np.flatnonzero(rng.random(n) < cfg.stale_category_share)
        if n_leaves > 1
        else np.empty(0, np.int64)
    )
    old_leaf = (cat.leaf[stale] + rng.integers(1, max(n_leaves, 2), size=stale.size)) % n_leaves
    cat_time = when(n)
    cat_time[stale] = when(stale.size, mid, END_MS)

    avail_first = rng.random(n) < 0.85
    toggled = np.flatnonzero(rng.random(n) < 0.3)
    avail_time = when(n, BEGIN_MS, mid)

    leaf_token = rng.integers(1, 1_400_000, size=n_leaves)
    root_token = rng.integers(1, 1_400_000, size=cfg.n_roots)
    amount = text(rng.integers(1, 200, size=n) * 24)
    hashed = np.char.add(
        np.char.add(np.char.add(text(leaf_token[cat.leaf]), " n"), np.char.add(amount, ".000 ")),
        text(rng.integers(1, 1_400_000, size=n)),
    )
    price = np.char.add(np.char.add("n", text(cat.price)), ".000")

    parts = [
        (cat.item_ids, "categoryid", text(true_cat), cat_time),
        (
            cat.item_ids[stale],
            "categoryid",
            text(tree.ids[tree.leaves[old_leaf]]),
            when(stale.size, BEGIN_MS, mid),
        ),
        (cat.item_ids, "available", np.where(avail_first, "1", "0"), avail_time),
        (
            cat.item_ids[toggled],
            "available",
            np.where(avail_first[toggled], "0", "1"),
            when(toggled.size, mid, END_MS),
        ),
        (cat.item_ids, "790", price, when(n)),
        (cat.item_ids, "888", hashed, when(n)),
        (cat.item_ids, "364", text(root_token[cat.root]), when(n)),
    ]
    frame = pd.DataFrame(
        {
            "timestamp": np.concatenate([p[3] for p in parts]),
            "itemid": np.concatenate([p[0] for p in parts]),
            "property": np.concatenate([np.full(p[0].size, p[1], dtype=object) for p in parts]),
            "value": np.concatenate([np.asarray(p[2], dtype=object) for p in parts]),
        }
    )
    frame["property"] = frame["property"].astype("str")
    frame["value"] = frame["value"].astype("str")
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _resolve_scale(scale: str | ScaleConfig) -> ScaleConfig:
    if isinstance(scale, ScaleConfig):
        return scale
    if isinstance(scale, str) and scale in SCALES:
        return SCALES[scale]
    raise ValueError(
        f"unknown scale {scale!r}; choose one of {sorted(SCALES)} or pass a ScaleConfig"
    )


def generate(scale: str | ScaleConfig = "demo", seed: int = 42) -> SyntheticData:
    """Simulate a shop and return its RetailRocket-format logs with the ground truth.

    Parameters
    ----------
    scale:
        ``"tiny"`` (~10k events, for unit tests), ``"demo"`` (~300k events), ``"full"``
        (RetailRocket's size, ~2.76M events) or a :class:`ScaleConfig`.
    seed:
        Seed of the one ``np.random.default_rng`` every draw comes from: the same seed gives
        identical frames.
    """
    cfg = _resolve_scale(scale)
    rng = np.random.default_rng(seed)

    tree = _category_tree(cfg, rng)
    cat = _catalogue(cfg, tree, rng)
    succ = _successors(cfg, tree, cat, rng)
    vis = _visitors(cfg, tree, cat, rng)

    # sessions, ordered by visitor then by time
    n_sess_total = int(vis.n_sessions.sum())
    sess_visitor = np.repeat(np.arange(cfg.n_visitors), vis.n_sessions)
    visitor_first_sess = np.cumsum(vis.n_sessions) - vis.n_sessions
    shopping = rng.random(n_sess_total) < cfg.shopping_share
    mean_len = np.where(
        vis.returning[sess_visitor], cfg.mean_session_length_returning, cfg.mean_session_length
    )
    mean_len = np.where(shopping, cfg.mean_session_length_shopping, mean_len)
    length = np.minimum(rng.geometric(1.0 / mean_len, size=n_sess_total), cfg.max_session_length)
    offset = np.cumsum(length) - length

    view_item = _walk(cfg, cat, succ, vis, sess_visitor, length, offset, tree.leaves.size, rng)
    view_time, gap_after, last_view = _session_times(
        cfg, vis, sess_visitor, visitor_first_sess, length, offset, rng
    )
    view_session = np.repeat(np.arange(n_sess_total), length)
    view_visitor = sess_visitor[view_session]
    cart_view, cart_time, bought, tx_time, tx_session = _funnel(
        cfg,
        cat,
        vis,
        view_item,
        view_session,
        view_visitor,
        view_time,
        gap_after,
        last_view,
        shopping,
        rng,
    )

    # all events, sorted by time (views before carts before transactions on ties)
    n_v, n_c, n_t = view_item.size, cart_view.size, bought.size
    ts = np.concatenate((view_time, cart_time, tx_time))
    kind = np.concatenate(
        (np.zeros(n_v, np.int64), np.ones(n_c, np.int64), np.full(n_t, 2, np.int64))
    )
    session = np.concatenate((view_session, view_session[cart_view], tx_session))
    item = np.concatenate((view_item, view_item[cart_view], view_item[cart_view[bought]]))
    order = np.argsort(ts * 4 + kind, kind="stable")
    ts, kind, session, item = ts[order], kind[order], session[order], item[order]

    is_tx = kind == 2
    tx_codes, _ = pd.factorize(session[is_tx])
    tx_values = np.zeros(ts.size, dtype=np.int64)
    tx_values[is_tx] = tx_codes
    session_ids, _ = pd.factorize(session)

    events = pd.DataFrame(
        {
            "timestamp": ts,
            "visitorid": sess_visitor[session],
            "event": pd.Categorical.from_codes(kind, categories=list(EVENT_TYPES)).astype("str"),
            "itemid": cat.item_ids[item],
            "transactionid": pd.arrays.IntegerArray(tx_values, ~is_tx),
        }
    )

    parent = tree.parent
    cat_tree = pd.DataFrame(
        {
            "categoryid": tree.ids,
            "parentid": pd.arrays.IntegerArray(
                np.where(parent >= 0, tree.ids[parent], 0), parent < 0
            ),
        }
    )
    cat_tree = cat_tree.iloc[rng.permutation(len(cat_tree))].reset_index(drop=True)

    leaf_ids = tree.ids[tree.leaves]
    items = pd.DataFrame(
        {
            "item_id": cat.item_ids,
            "category_id": leaf_ids[cat.leaf],
            "root_category_id": tree.ids[cat.root],
            "price": cat.price,
            "appeal": cat.appeal,
            "popularity_weight": cat.popularity,
        }
    )
    visitors = pd.DataFrame(
        {
            "visitor_id": np.arange(cfg.n_visitors, dtype=np.int64),
            "preferred_category_id": leaf_ids[vis.primary],
            "secondary_category_id": leaf_ids[vis.secondary],
            "purchase_propensity": vis.propensity,
            "n_sessions": vis.n_sessions,
            "is_returning": vis.returning,
        }
    )
    item_properties = _item_properties(cfg, tree, cat, rng)
    return SyntheticData(
        events=events,
        item_properties=item_properties,
        category_tree=cat_tree,
        items=items,
        successors=cat.item_ids[succ],
        successor_probs=np.asarray(cfg.successor_probs, dtype=np.float64),
        visitors=visitors,
        session_ids=session_ids.astype(np.int64),
        config=cfg,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> Path:
    """Write ``frame`` as unquoted CSV with a plain header, atomically (temp file + rename)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(frame.loc[:, list(columns)], preserve_index=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            sink.write((",".join(columns) + "\n").encode())
            if len(frame):
                pacsv.write_csv(
                    table,
                    sink,
                    write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
                )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write(
    data: SyntheticData, out_dir: str | Path, *, ground_truth: bool = True
) -> dict[str, Path]:
    """Write ``data`` as RetailRocket's files into ``out_dir``; return their paths by name.

    Files: ``events.csv``, ``item_properties_part1.csv``, ``item_properties_part2.csv`` (the
    property rows split in two halves), ``category_tree.csv`` and, with ``ground_truth``, a
    ``ground_truth.npz`` (load with ``np.load(path, allow_pickle=False)``): per item (rows sorted
    by id) ``item_id, category_id, root_category_id, price, appeal, popularity_weight,
    successors`` (n_items x K ids) and ``successor_probs``; per visitor (row = visitor id)
    ``preferred_category_id, secondary_category_id, purchase_propensity``; per event row of
    ``events.csv`` ``session_ids``. Every file is written to a temporary name in ``out_dir`` and
    renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    props = data.item_properties
    half = (len(props) + 1) // 2
    paths = {
        "events": _write_csv(data.events, out / "events.csv", _EVENT_COLUMNS),
        "item_properties_part1": _write_csv(
            props.iloc[:half], out / "item_properties_part1.csv", _ITEM_PROPERTY_COLUMNS
        ),
        "item_properties_part2": _write_csv(
            props.iloc[half:], out / "item_properties_part2.csv", _ITEM_PROPERTY_COLUMNS
        ),
        "category_tree": _write_csv(data.category_tree, out / "category_tree.csv", _TREE_COLUMNS),
    }
    if ground_truth:
        path = out / "ground_truth.npz"
        tmp = out / f".ground_truth.{os.getpid()}.tmp.npz"
        items, visitors = data.items, data.visitors
        try:
            np.savez(
                tmp,
                item_id=items["item_id"].to_numpy(np.int32),
                category_id=items["category_id"].to_numpy(np.int32),
                root_category_id=items["root_category_id"].to_numpy(np.int32),
                price=items["price"].to_numpy(np.float32),
                appeal=items["appeal"].to_numpy(np.float32),
                popularity_weight=items["popularity_weight"].to_numpy(np.float64),
                successors=data.successors.astype(np.int32),
                successor_probs=data.successor_probs,
                preferred_category_id=visitors["preferred_category_id"].to_numpy(np.int32),
                secondary_category_id=visitors["secondary_category_id"].to_numpy(np.int32),
                purchase_propensity=visitors["purchase_propensity"].to_numpy(np.float32),
                session_ids=data.session_ids.astype(np.int32),
            )
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths["ground_truth"] = path
    return paths


def generate_to_dir(
    out_dir: str | Path, scale: str | ScaleConfig = "demo", seed: int = 42
) -> dict[str, Path]:
    """Generate a synthetic shop and write its RetailRocket-format files into ``out_dir``."""
    cfg = _resolve_scale(scale)
    logger.info("generating synthetic RetailRocket data (scale={}, seed={})", cfg.name, seed)
    data = generate(cfg, seed=seed)
    paths = write(data, out_dir)
    stats = describe(data.events)
    logger.info(
        "wrote {:,} events ({:,} visitors, {:,} items, {:,} transactions) to {}",
        stats["n_events"], stats["n_visitors"], stats["n_items"], stats["n_transactions"], out_dir,
    )  # fmt: skip
    return paths


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def _pick(columns: pd.Index, *names: str) -> str | None:
    return next((name for name in names if name in columns), None)


def _to_utc(value: Any, numeric: bool) -> pd.Timestamp:
    if numeric:
        return pd.Timestamp(int(value), unit="ms", tz="UTC")
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def describe(events: pd.DataFrame) -> pd.Series:
    """Summary statistics of an events frame, canonical (``visitor_id``, datetime timestamps) or
    raw RetailRocket (``visitorid``, ms epoch timestamps).

    Returns a Series with ``n_events, n_visitors, n_items, n_categories`` (when ``category_id`` is
    present), ``n_view, n_addtocart, n_transaction`` and their ``share_*``,
    ``n_transactions`` (distinct transaction ids), ``cart_per_view``, ``purchase_per_cart``,
    ``start, end, days``, ``events_per_visitor_mean/median``, ``share_single_event_visitors``
    and, when ``session_id`` is present, ``n_sessions, events_per_session_mean,
    items_per_session_mean, share_single_event_sessions``.
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    cols = events.columns
    visitor = _pick(cols, VISITOR_ID, "visitorid")
    item = _pick(cols, ITEM_ID, "itemid")
    tx = _pick(cols, TRANSACTION_ID, "transactionid")
    missing = [
        name
        for name, col in (
            ("timestamp", _pick(cols, TIMESTAMP)),
            ("visitor", visitor),
            ("item", item),
            ("event", _pick(cols, EVENT)),
        )
        if col is None
    ]
    if missing:
        raise ValueError(f"events lack {missing} columns; it has {list(cols)}")

    n = len(events)
    stats: dict[str, Any] = {
        "n_events": n,
        "n_visitors": int(events[visitor].nunique()),
        "n_items": int(events[item].nunique()),
    }
    if CATEGORY_ID in cols:
        stats["n_categories"] = int(events[CATEGORY_ID].nunique(dropna=True))
    counts = events[EVENT].astype("str").value_counts()
    for name in EVENT_TYPES:
        stats[f"n_{name}"] = int(counts.get(name, 0))
    for name in EVENT_TYPES:
        stats[f"share_{name}"] = stats[f"n_{name}"] / n if n else float("nan")
    stats["n_transactions"] = int(events[tx].nunique(dropna=True)) if tx is not None else 0
    stats["cart_per_view"] = (
        stats["n_addtocart"] / stats["n_view"] if stats["n_view"] else float("nan")
    )
    stats["purchase_per_cart"] = (
        stats["n_transaction"] / stats["n_addtocart"] if stats["n_addtocart"] else float("nan")
    )

    ts = events[TIMESTAMP]
    if n:
        numeric = pd.api.types.is_numeric_dtype(ts)
        start, end = _to_utc(ts.min(), numeric), _to_utc(ts.max(), numeric)
        stats["start"], stats["end"] = start, end
        stats["days"] = (end - start).total_seconds() / 86_400
        per_visitor = events[visitor].value_counts()
        stats["events_per_visitor_mean"] = float(per_visitor.mean())
        stats["events_per_visitor_median"] = float(per_visitor.median())
        stats["share_single_event_visitors"] = float((per_visitor == 1).mean())
    else:
        stats.update(
            start=pd.NaT, end=pd.NaT, days=float("nan"), events_per_visitor_mean=float("nan"),
            events_per_visitor_median=float("nan"), share_single_event_visitors=float("nan"),
        )  # fmt: skip
    if SESSION_ID in cols:
        per_session = events[SESSION_ID].value_counts()
        stats["n_sessions"] = int(per_session.size)
        stats["events_per_session_mean"] = float(per_session.mean()) if n else float("nan")
        distinct = events.drop_duplicates([SESSION_ID, item])[SESSION_ID].value_counts()
        stats["items_per_session_mean"] = float(distinct.mean()) if n else float("nan")
        stats["share_single_event_sessions"] = (
            float((per_session == 1).mean()) if n else float("nan")
        )
    return pd.Series(stats, dtype=object, name="value")


_LABELS = {
    "n_events": "events",
    "n_visitors": "visitors",
    "n_items": "items",
    "n_categories": "categories",
    "n_view": "views",
    "n_addtocart": "add-to-carts",
    "n_transaction": "transaction events",
    "n_transactions": "transactions (distinct ids)",
    "cart_per_view": "add-to-carts per view",
    "purchase_per_cart": "transactions per add-to-cart",
    "start": "first event",
    "end": "last event",
    "days": "days",
    "events_per_visitor_mean": "events per visitor (mean)",
    "events_per_visitor_median": "events per visitor (median)",
    "share_single_event_visitors": "visitors with one event",
    "n_sessions": "sessions",
    "events_per_session_mean": "events per session (mean)",
    "items_per_session_mean": "distinct items per session (mean)",
    "share_single_event_sessions": "sessions with one event",
}


def format_description(stats: pd.Series | dict[str, Any]) -> str:
    """A readable multi-line text of :func:`describe`'s statistics."""
    stats = dict(stats)
    lines: list[str] = []
    width = max(len(label) for label in _LABELS.values())

    def add(label: str, text: str) -> None:
        lines.append(f"{label:<{width}}  {text}")

    for key, label in _LABELS.items():
        if key not in stats:
            continue
        value = stats[key]
        if key.startswith("n_"):
            text = f"{value:,}"
            share_key = f"share_{key[2:]}"
            if share_key in stats:
                text += f"  ({stats[share_key]:.2%})"
        elif key.startswith("share_"):
            text = f"{value:.2%}"
        elif key in ("start", "end"):
            text = "-" if pd.isna(value) else value.strftime("%Y-%m-%d %H:%M:%S UTC")
        elif isinstance(value, float):
            text = (
                f"{value:,.3f}"
                if key in ("cart_per_view", "purchase_per_cart")
                else f"{value:,.2f}"
            )
        else:
            text = str(value)
        add(label, text)
    return "\n".join(lines)
