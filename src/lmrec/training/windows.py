"""Training windows: every event of every training sequence is a prediction target once per epoch.

A sequence longer than the window is covered from its end backwards by windows of `max_len + 1`
events; each window's first event is context only, so consecutive windows share one event and no
target is counted twice. A `stride` below `max_len` gives overlapping windows (more context for early
targets) while each target still stays fresh in exactly one window.
"""

from __future__ import annotations

import numpy as np
import torch

from lmrec.models.base import Batch


class WindowSet:
    """All training windows of a dataset as (user, start, end, first_fresh) arrays into a flat item array."""

    def __init__(
        self,
        items: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        max_len: int,
        stride: int | None = None,
    ) -> None:
        self.items = items
        self.max_len = max_len
        stride = min(stride or max_len, max_len)
        users, win_start, win_end, fresh_from = [], [], [], []
        for user in np.flatnonzero(lengths >= 2):
            first, n = int(starts[user]), int(lengths[user])
            ends = np.arange(n, 1, -stride)
            fresh = np.maximum(ends - stride, 1)
            begin = np.maximum(ends - max_len - 1, 0)
            users.append(np.full(len(ends), user))
            win_start.append(first + begin)
            win_end.append(first + ends)
            fresh_from.append(first + fresh)
        self.users = np.concatenate(users) if users else np.zeros(0, np.int64)
        self.start = np.concatenate(win_start) if users else np.zeros(0, np.int64)
        self.end = np.concatenate(win_end) if users else np.zeros(0, np.int64)
        self.fresh_from = np.concatenate(fresh_from) if users else np.zeros(0, np.int64)
        self.n_targets = int((self.end - self.fresh_from).sum())

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def batches(self, batch_size: int, rng: np.random.Generator):
        """Yield shuffled right-aligned `Batch`es covering every window once, each only as wide as its longest window.

        Batches are drawn uniformly at random: grouping windows of similar length saved padding but put every
        user's short first window into the same few batches and cost validation NDCG on MovieLens-100K.
        """
        order = rng.permutation(len(self))
        for lo in range(0, len(order), batch_size):
            yield self.batch(order[lo : lo + batch_size])

    @property
    def targets_per_window(self) -> np.ndarray:
        """How many fresh targets each window holds (its events from `fresh_from` to its end)."""
        return self.end - self.fresh_from

    def batch(self, idx: np.ndarray) -> Batch:
        """The right-aligned `Batch` of the windows `idx`, as wide as the longest of them."""
        start, end, fresh_from = self.start[idx], self.end[idx], self.fresh_from[idx]
        width = int((end - start).max())
        cols = np.arange(width)
        # Column c of a row holds event end - width + c; columns before `start` are padding.
        pos = end[:, None] - width + cols[None, :]
        real = pos >= start[:, None]
        items = np.where(real, self.items[np.clip(pos, 0, None)], 0)
        fresh = real & (pos >= fresh_from[:, None])
        return Batch(
            items=torch.from_numpy(items.astype(np.int64)),
            fresh=torch.from_numpy(fresh),
            users=torch.from_numpy(self.users[idx].astype(np.int64)),
        )
