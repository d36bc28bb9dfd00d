"""Segments of targets and items for the report: popularity tiers, history-length buckets, concentration.

Popularity tiers split the training events in thirds: the head is the most popular items that together
hold the first third of the training events, the torso the next third, the tail the last third; cold items
have no training event at all. Equal shares of events keep the tiers' target counts comparable (each holds
about a third of targets that follow training popularity), so their intervals are about equally wide.
"""

from __future__ import annotations

import numpy as np

TIERS = ("head", "torso", "tail", "cold")
COLD = TIERS.index("cold")


def popularity_tiers(counts: np.ndarray) -> np.ndarray:
    """Tier index into `TIERS` of every item id, from its training events `counts` (index 0 is padding)."""
    order = np.argsort(-counts[1:], kind="stable") + 1
    before = np.cumsum(counts[order]) - counts[order]
    tiers = np.full(counts.shape, COLD, dtype=np.int64)
    tiers[order] = np.minimum(before * 3 // max(int(counts.sum()), 1), 2)
    tiers[counts == 0] = COLD
    return tiers


def history_buckets(lengths: np.ndarray, n: int = 5) -> tuple[np.ndarray, list[str]]:
    """Each target's bucket of history length (quantile buckets, about equally full) and each bucket's label."""
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n + 1)[1:-1]).round().astype(np.int64))
    _, buckets = np.unique(np.searchsorted(edges, lengths, side="right"), return_inverse=True)
    labels = []
    for bucket in range(int(buckets.max()) + 1):
        low, high = int(lengths[buckets == bucket].min()), int(lengths[buckets == bucket].max())
        labels.append(f"{low}" if low == high else f"{low}–{high}")
    return buckets, labels


def tier_shares(items: np.ndarray, tiers: np.ndarray) -> np.ndarray:
    """Share of `items` (ids; 0, an empty slot, left out) in each tier of `TIERS`."""
    real = items[items > 0]
    return np.bincount(tiers[real], minlength=len(TIERS)) / max(real.size, 1)


def gini(topk: np.ndarray, n_items: int) -> float:
    """Gini index of how often each real item is recommended: 0 when all equally, 1 when one item takes all."""
    shown = np.sort(np.bincount(topk.ravel(), minlength=n_items + 1)[1:]).astype(np.float64)
    if shown.sum() == 0:
        return 0.0
    rank = np.arange(1, n_items + 1)
    return float(2 * (rank * shown).sum() / (n_items * shown.sum()) - (n_items + 1) / n_items)
