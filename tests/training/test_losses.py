"""The objectives compute what they claim, never use the padding row, and train."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmrec.training.losses import bce_negatives, full_softmax_ce, make_objective, sampled_softmax_logq


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
