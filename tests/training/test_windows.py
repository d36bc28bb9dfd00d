"""Training windows cover every training event exactly once as a target."""

from __future__ import annotations

import numpy as np

from lmrec.training.windows import WindowSet


def _targets(windows: WindowSet, rng_seed: int = 0) -> list[int]:
    flat = []
    for batch in windows.batches(7, np.random.default_rng(rng_seed)):
        flat += batch.items[batch.fresh].tolist()
    return flat


def test_every_event_after_the_first_is_a_target_once() -> None:
    seqs = [np.arange(1, 24), np.arange(100, 103), np.array([7]), np.arange(200, 260)]
    items = np.concatenate(seqs)
    lengths = np.array([len(s) for s in seqs])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for stride in (None, 3):
        windows = WindowSet(items, starts, lengths, max_len=5, stride=stride)
        expected = sorted(np.concatenate([s[1:] for s in seqs]).tolist())
        assert sorted(_targets(windows)) == expected
        assert windows.n_targets == len(expected)


def test_windows_are_right_aligned_and_contiguous() -> None:
    items = np.arange(1, 13)
    windows = WindowSet(items, np.array([0]), np.array([12]), max_len=4)
    rows = {tuple(b.items[0].tolist()) for b in windows.batches(1, np.random.default_rng(0))}
    assert rows == {(8, 9, 10, 11, 12), (4, 5, 6, 7, 8), (1, 2, 3, 4)}  # batches are as wide as needed
    for batch in windows.batches(2, np.random.default_rng(1)):
        real = batch.items > 0
        # padding only ever precedes real items, and padding is never a target
        assert not (batch.fresh & ~real).any()
        assert (real.int().diff(dim=1) >= 0).all()


def test_training_uses_only_the_training_prefix() -> None:
    items = np.array([1, 2, 3, 4, 5, 6])
    windows = WindowSet(items, np.array([0]), np.array([4]), max_len=10)
    seen = {int(x) for b in windows.batches(4, np.random.default_rng(0)) for x in b.items.flatten()}
    assert seen <= {0, 1, 2, 3, 4}
