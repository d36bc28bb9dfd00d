"""The objectives compute what they claim, never use the padding row, and train."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmrec.models.base import ItemBias, seen_items
from lmrec.training import losses
from lmrec.training.losses import (
    AUTO_FULL_SOFTMAX_ITEMS,
    bce_negatives,
    full_softmax_ce,
    make_objective,
    resolved_loss,
    sampled_softmax_logq,
)


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(6, 4), torch.tensor([1, 2, 3, 4, 5, 1]), torch.randn(6, 4)


def test_full_softmax_matches_hand_computation_and_ignores_padding() -> None:
    hidden, targets, table = _case()
    loss = full_softmax_ce()(hidden, targets, table)
    logits = hidden @ table.T
    expected = -(logits[torch.arange(6), targets] - torch.logsumexp(logits[:, 1:], 1)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    table2 = table.clone()
    table2[0] = 1e6  # a huge padding row changes nothing
    assert torch.allclose(full_softmax_ce()(hidden, targets, table2), loss)


def test_bce_with_one_negative_matches_definition() -> None:
    hidden, targets, table = _case()
    gen = torch.Generator().manual_seed(3)
    loss = bce_negatives(5, 1, gen)(hidden, targets, table)
    neg = torch.randint(1, 6, (6, 1), generator=torch.Generator().manual_seed(3))
    pos = (hidden * table[targets]).sum(-1)
    negl = (hidden * table[neg[:, 0]]).sum(-1)
    keep = (neg[:, 0] != targets).float()
    expected = (F.softplus(-pos) + F.softplus(negl) * keep).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_sampled_softmax_never_samples_padding_and_is_finite() -> None:
    hidden, targets, table = _case()
    popularity = torch.tensor([1e9, 5.0, 1.0, 1.0, 1.0, 1.0])
    objective = sampled_softmax_logq(popularity, 50, torch.Generator().manual_seed(0))
    loss = objective(hidden.requires_grad_(), targets, table)
    loss.backward()
    assert math.isfinite(loss.item()) and hidden.grad is not None


def test_objectives_learn_a_simple_mapping() -> None:
    for name in ("ce", "bce", "sampled_softmax"):
        torch.manual_seed(0)
        table = torch.nn.Parameter(torch.randn(11, 8) * 0.1)
        proj = torch.nn.Linear(10, 8)
        objective = make_objective(name, 10, 5, torch.ones(11), torch.Generator().manual_seed(0))
        opt = torch.optim.Adam([table, *proj.parameters()], lr=0.05)
        x = torch.eye(10)
        targets = torch.arange(1, 11)
        for _ in range(200):
            opt.zero_grad()
            objective(proj(x), targets, table).backward()
            opt.step()
        predicted = (proj(x) @ table[1:].T).argmax(1) + 1
        assert (predicted == targets).float().mean() >= 0.9, name


def _reference_ce(
    hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, extra: torch.Tensor
) -> torch.Tensor:
    """The unchunked full softmax that the chunked one replaces, over dense additive logits `[N, n_items+1]`."""
    return F.cross_entropy(hidden @ table[1:].T + extra[:, 1:], targets - 1)


def _dense(extra: ItemBias, n_cols: int) -> torch.Tensor:
    return extra.weight * extra.listed(slice(None), n_cols)


@pytest.mark.parametrize("chunk_logits", [7, 64, 1 << 23])
def test_chunked_softmax_matches_full_softmax_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch, chunk_logits: int
) -> None:
    monkeypatch.setattr(losses, "CHUNK_LOGITS", chunk_logits)
    monkeypatch.setattr(losses, "MIN_CHUNK_ROWS", 1)
    gen = torch.Generator().manual_seed(1)
    n, n_items, d = 37, 23, 8
    hidden = torch.randn(n, d, generator=gen)
    table = torch.randn(n_items + 1, d, generator=gen)
    weight = torch.tensor(0.7)
    history = torch.randint(0, n_items + 1, (n, 9), generator=gen)
    targets = torch.randint(1, n_items + 1, (n,), generator=gen)
    results = []
    for chunked in (True, False):
        leaves = [t.clone().requires_grad_() for t in (hidden, table, weight)]
        extra = ItemBias(leaves[2], history)
        if chunked:
            loss = full_softmax_ce()(leaves[0], targets, leaves[1], extra)
        else:
            loss = _reference_ce(leaves[0], targets, leaves[1], _dense(extra, n_items + 1))
        loss.backward()
        results.append([loss, *(t.grad for t in leaves)])
    for got, want in zip(*results, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert results[0][2][0].abs().max() == 0, "the padding row gets no gradient"


def test_chunked_softmax_without_bias_matches_cross_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "CHUNK_LOGITS", 10)
    monkeypatch.setattr(losses, "MIN_CHUNK_ROWS", 1)
    hidden, targets, table = _case()
    hidden.requires_grad_()
    loss = full_softmax_ce()(hidden, targets, table)
    (grad,) = torch.autograd.grad(loss, hidden)
    ref_hidden = hidden.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_hidden @ table[1:].T, targets - 1)
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad, ref_hidden.grad, rtol=1e-5, atol=1e-6)


def test_item_bias_matches_the_dense_seen_mask() -> None:
    inputs = torch.tensor([[0, 0, 3, 1, 3], [2, 4, 4, 1, 5]])
    seen = seen_items(inputs)
    bias = ItemBias(torch.tensor(2.0), seen.reshape(-1, 5))
    dense = _dense(bias, 6).reshape(2, 5, 6)
    for b in range(2):
        for t in range(5):
            expected = torch.zeros(6)
            expected[inputs[b, : t + 1]] = 2.0
            expected[0] = 0.0
            assert torch.equal(dense[b, t], expected)
    cols = torch.tensor([[1, 3], [2, 5]]).repeat_interleave(5, 0)
    assert torch.equal(bias.at(cols), dense.reshape(10, 6).gather(1, cols))


def test_auto_trains_the_full_softmax_up_to_its_threshold_and_sampled_softmax_above() -> None:
    assert resolved_loss("auto", AUTO_FULL_SOFTMAX_ITEMS) == "ce"
    assert resolved_loss("auto", AUTO_FULL_SOFTMAX_ITEMS + 1) == "sampled_softmax"
    assert resolved_loss("bce", 10**7) == "bce"  # an explicit choice is kept
    generator = torch.Generator().manual_seed(0)
    hidden, table, targets = torch.randn(4, 8), torch.randn(11, 8), torch.tensor([1, 2, 3, 10])
    full = make_objective("auto", 10, 5, torch.ones(11), generator)(hidden, targets, table, None)
    torch.testing.assert_close(full, full_softmax_ce()(hidden, targets, table, None))


def test_chunks_cover_the_rows_and_never_go_below_the_minimum_rows() -> None:
    for n_rows, n_items in ((100, 10), (3200, 10_000), (3200, 1_000_000), (5, 10**7)):
        chunks = losses._chunks(n_rows, n_items)
        assert [i for c in chunks for i in range(n_rows)[c]] == list(range(n_rows))
        assert all(len(range(n_rows)[c]) >= min(n_rows - c.start, losses.MIN_CHUNK_ROWS) for c in chunks)
    assert len(losses._chunks(3200, 1_000_000)) == 3200 // losses.MIN_CHUNK_ROWS
