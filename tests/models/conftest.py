"""Small shared helpers for the model tests: a toy next-item pattern and a plain training loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lmrec.models.base import Batch, SequentialRecommender
from lmrec.training.losses import full_softmax_ce


def _right_aligned(rows: list[list[int]], width: int) -> Tensor:
    return torch.tensor([[0] * (width - len(row)) + row for row in rows])


def _chain_batch(n_items: int, width: int, copies: int = 1) -> Batch:
    """Windows of the chain 1 → 2 → … → n_items (item i is always followed by item i + 1), `copies` times."""
    rows = [list(range(max(1, end - width + 1), end + 1)) for end in range(2, n_items + 1)] * copies
    items = _right_aligned(rows, width)
    real = items > 0
    first = real.float().argmax(1, keepdim=True)
    fresh = real & (torch.arange(width)[None, :] > first)
    return Batch(items=items, fresh=fresh, users=torch.arange(len(rows)))


def _train(model: SequentialRecommender, batch: Batch, steps: int, lr: float = 0.01) -> None:
    model.objective = full_softmax_ce()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()


def _left_pad(history: Tensor, extra: int) -> Tensor:
    return torch.cat([torch.zeros(history.shape[0], extra, dtype=history.dtype), history], 1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def right_aligned() -> Callable[[list[list[int]], int], Tensor]:
    """Rows of item ids → a left-padded `[B, width]` history."""
    return _right_aligned


@pytest.fixture
def chain_batch() -> Callable[[int, int], Batch]:
    """A Batch of every window of the chain pattern."""
    return _chain_batch


@pytest.fixture
def train() -> Callable[..., None]:
    """Adam on `model.loss(batch)` with a full-softmax CE objective; leaves the model in eval mode."""
    return _train


@pytest.fixture
def left_pad() -> Callable[[Tensor, int], Tensor]:
    """The same history with `extra` more padding columns in front."""
    return _left_pad
