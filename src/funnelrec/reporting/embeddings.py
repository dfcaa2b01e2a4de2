"""t-SNE map of item embeddings, coloured by top-level category.

Drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global backend change, no
window): safe in servers, tests and notebooks alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

__all__ = ["plot_item_embeddings", "plot_model_embeddings", "top_level_categories"]

#: Categories drawn in their own colour; the rest are grey "other".
N_COLOURED_CATEGORIES = 10


def _tree_columns(tree: pd.DataFrame) -> tuple[str, str]:
    for child, parent in (("categoryid", "parentid"), ("category_id", "parent_id")):
        if child in tree.columns and parent in tree.columns:
            return child, parent
    raise ValueError(
        "category_tree needs columns 'categoryid' and 'parentid' (RetailRocket) or 'category_id' and "
        f"'parent_id', got {list(tree.columns)}"
    )


def top_level_categories(category_ids: np.ndarray | pd.Series, category_tree: pd.DataFrame) -> np.ndarray:
    """The root of each category in ``category_tree`` (int64; ``-1`` for a missing category).

    Vectorised: every category climbs one parent per step, all at once, for as many steps as
    the tree is deep. A category not in the tree is its own root; a cycle in the tree stops the
    climb after ``len(tree)`` steps instead of looping forever.
    """
    child_col, parent_col = _tree_columns(category_tree)
    ids = pd.Series(np.asarray(category_ids)).astype("Int64").fillna(-1).to_numpy(np.int64)
    children = category_tree[child_col].astype("int64").to_numpy()
    parents = category_tree[parent_col].astype("Int64").fillna(-1).to_numpy(np.int64)
    lookup = pd.Index(children)
    if not lookup.is_unique:
        dupes = lookup[lookup.duplicated()].unique()[:5].tolist()
        raise ValueError(f"category_tree lists some categories twice, e.g. {dupes}")
    current = ids.copy()
    for _ in range(len(children) + 1):
        pos = lookup.get_indexer(current)
        parent = np.where(pos >= 0, parents[np.maximum(pos, 0)], -1)
        climb = (current >= 0) & (parent >= 0)
        if not climb.any():
            break
        current = np.where(climb, parent, current)
    return current


def plot_item_embeddings(
    embeddings: np.ndarray,
    item_ids: np.ndarray,
    categories: np.ndarray,
    path: str | Path,
    n_sample: int = 5000,
    seed: int = 42,
    title: str = "Item embeddings (t-SNE)",
    perplexity: float = 30.0,
) -> Path:
    """Project a sample of item embeddings to 2-D with t-SNE and save a scatter as PNG.

    Parameters
    ----------
    embeddings:
        ``[n_items, d]`` item vectors.
    item_ids:
        ``[n_items]`` item ids (for the sample's bookkeeping; must align with ``embeddings``).
    categories:
        ``[n_items]`` top-level category per item (``-1``: unknown); the
        :data:`N_COLOURED_CATEGORIES` most frequent in the sample get a colour, the rest
        "other".
    path:
        Where the PNG goes (folders are created).
    n_sample, seed:
        At most ``n_sample`` items, drawn with ``seed`` (t-SNE is quadratic-ish in the sample).
    perplexity:
        t-SNE perplexity (lowered to fit tiny samples); ``init="pca"``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    vectors = np.asarray(embeddings, dtype=np.float32)
    item_ids = np.asarray(item_ids)
    categories = np.asarray(categories, dtype=np.int64)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [n_items, d], got shape {vectors.shape}")
    if not len(item_ids) == len(categories) == len(vectors):
        raise ValueError(
            f"embeddings ({len(vectors)}), item_ids ({len(item_ids)}) and categories ({len(categories)}) "
            "must have one row per item"
        )
    if len(vectors) < 3:
        raise ValueError(f"need at least 3 items to draw a t-SNE map, got {len(vectors)}")
    if n_sample < 3:
        raise ValueError(f"n_sample must be at least 3, got {n_sample}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), min(n_sample, len(vectors)), replace=False))
    sample, sample_cats = vectors[rows], categories[rows]
    tsne = TSNE(
        n_components=2, perplexity=min(perplexity, (len(rows) - 1) / 3), init="pca", random_state=seed,
    )
    # one scikit-learn call, so no progress bar: say what it does and how long it took
    logger.info("t-SNE of {:,} of {:,} item vectors ({}-d) for {}; about a minute for 5,000 items",
                len(rows), len(vectors), vectors.shape[1], Path(path).name)
    started = time.perf_counter()
    points = tsne.fit_transform(sample)
    logger.info("t-SNE done in {:.1f}s", time.perf_counter() - started)

    counts = pd.Series(sample_cats[sample_cats >= 0]).value_counts()
    top = counts.index[:N_COLOURED_CATEGORIES].to_numpy()
    # no wider than the report shows it (charts.MAX_WIDTH_INCHES at 110 dpi): text stays readable
    figure = Figure(figsize=(9, 7), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    other = ~np.isin(sample_cats, top)
    if other.any():
        ax.scatter(points[other, 0], points[other, 1], s=5, c="lightgrey", alpha=0.6,
                   label=f"other ({int(other.sum())})", linewidths=0)
    palette = [f"C{i}" for i in range(10)]
    for colour, category in zip(palette, top, strict=False):
        mask = sample_cats == category
        ax.scatter(points[mask, 0], points[mask, 1], s=7, c=colour, alpha=0.8,
                   label=f"{category} ({int(mask.sum())})", linewidths=0)
    ax.set_title(f"{title}: {len(rows):,} of {len(vectors):,} items", fontsize=14)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="top-level category", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10,
              title_fontsize=11, markerscale=2, frameon=False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_model_embeddings(model: Any, category_tree: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """t-SNE map of a fitted model's item vectors, coloured by top-level category.

    ``model`` needs ``get_item_embeddings()`` (Two-Tower) or ``_item_vectors()`` (ALS, Item2Vec,
    ...); ``kwargs`` go to :func:`plot_item_embeddings`.
    """
    model._check_fitted()
    if hasattr(model, "get_item_embeddings"):
        vectors = model.get_item_embeddings()
    else:
        vectors = model._item_vectors()
    if vectors is None:
        raise ValueError(f"{model.name} has no item embeddings to plot")
    roots = top_level_categories(model.item_category_, category_tree)
    kwargs.setdefault("title", f"{model.name} item embeddings (t-SNE)")
    return plot_item_embeddings(vectors, model.item_ids, roots, path, **kwargs)
