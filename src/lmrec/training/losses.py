"""Training objectives over an item table: full-softmax CE, BCE with sampled negatives, sampled softmax, and
the rule `auto` that picks between full and sampled softmax by catalogue size.

Each objective maps (hidden [N, d], targets [N] item ids ≥ 1, item table [n_items + 1, d], and optional
additive logits extra, an `ItemBias` over the N rows) to a scalar. Row 0 of the table is padding and never a
candidate.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from lmrec.errors import ConfigError
from lmrec.models.base import ItemBias, Objective

AUTO_FULL_SOFTMAX_ITEMS = 30_000  # `loss: auto` trains the full softmax up to this catalogue size (bench/loss_rule.py)
CHUNK_LOGITS = 1 << 19  # logits (rows x catalogue) per chunk of the full softmax: 2 MB in float32, cache-sized
MIN_CHUNK_ROWS = 32  # rows per chunk at least, whatever the catalogue: 128 MB of logits at 1M items


def _chunks(n_rows: int, n_items: int) -> list[slice]:
    """Row slices whose logits stay within CHUNK_LOGITS cells, so memory does not grow with rows x items, but
    of at least MIN_CHUNK_ROWS rows: each chunk reads the whole item table, and with fewer rows that read, not
    the arithmetic, sets the pace (at 1M items a row-by-row chunking streamed 256 MB per row)."""
    step = max(MIN_CHUNK_ROWS, CHUNK_LOGITS // max(1, n_items))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _chunk_logits(hidden: Tensor, items: Tensor, extra: ItemBias | None, rows: slice) -> tuple[Tensor, Tensor | None]:
    """Logits `[rows, n_items]` of one chunk over real items 1..n, and the chunk's bias indicator if any."""
    logits = hidden[rows] @ items.T
    if extra is None:
        return logits, None
    listed = extra.listed(rows, items.shape[0] + 1)[:, 1:]
    return logits.add_(extra.weight * listed), listed


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Mean full-softmax cross-entropy computed chunk by chunk; backward recomputes each chunk's softmax.

    Neither the `[N, n_items]` logits nor their gradient ever exist at once, so memory and allocator (kernel)
    time stay bounded by the chunk, not by rows x catalogue.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, items: Tensor, targets: Tensor, weight: Tensor | None, listed: Tensor | None
    ) -> Tensor:
        """Sum of per-row (log-sum-exp - target logit) over chunks, divided by N."""
        extra = None if weight is None else ItemBias(weight, listed)
        lse = hidden.new_empty(hidden.shape[0])
        total = hidden.new_zeros(())
        for rows in _chunks(hidden.shape[0], items.shape[0]):
            logits, _ = _chunk_logits(hidden, items, extra, rows)
            lse[rows] = torch.logsumexp(logits, 1)
            total += (lse[rows] - logits.gather(1, targets[rows, None])[:, 0]).sum()
        ctx.save_for_backward(hidden, items, targets, lse, weight, listed)
        return total / max(1, hidden.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """Gradients of hidden, item rows and bias weight from each chunk's recomputed softmax."""
        hidden, items, targets, lse, weight, listed_items = ctx.saved_tensors
        extra = None if weight is None else ItemBias(weight, listed_items)
        grad_hidden, grad_items = torch.empty_like(hidden), torch.zeros_like(items)
        grad_weight = None if weight is None else torch.zeros_like(weight)
        scale = grad / max(1, hidden.shape[0])
        for rows in _chunks(hidden.shape[0], items.shape[0]):
            logits, listed = _chunk_logits(hidden, items, extra, rows)
            probs = logits.sub_(lse[rows, None]).exp_()
            probs.scatter_add_(1, targets[rows, None], probs.new_full((probs.shape[0], 1), -1.0))
            probs.mul_(scale)
            grad_hidden[rows] = probs @ items
            grad_items.addmm_(probs.T, hidden[rows])
            if grad_weight is not None:
                grad_weight += (probs * listed).sum()
        return grad_hidden, grad_items, None, grad_weight, None


def full_softmax_ce() -> Objective:
    """Cross-entropy over the whole catalogue (SASRec+), chunked so its cost grows linearly with the catalogue."""

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: ItemBias | None = None) -> Tensor:
        weight, listed = (None, None) if extra is None else (extra.weight, extra.items)
        return _ChunkedSoftmaxCE.apply(hidden, table[1:], targets - 1, weight, listed)

    return objective


def bce_negatives(n_items: int, negatives: int, generator: torch.Generator) -> Objective:
    """Binary cross-entropy of each target against `negatives` uniformly sampled items (original SASRec)."""

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: ItemBias | None = None) -> Tensor:
        neg = torch.randint(1, n_items + 1, (targets.shape[0], negatives), generator=generator)
        neg = neg.to(targets.device)
        pos_logit = (hidden * table[targets]).sum(-1)
        neg_logit = torch.einsum("nd,nkd->nk", hidden, table[neg])
        if extra is not None:
            pos_logit = pos_logit + extra.at(targets[:, None])[:, 0]
            neg_logit = neg_logit + extra.at(neg)
        valid = neg != targets[:, None]
        loss_pos = F.softplus(-pos_logit)
        loss_neg = (F.softplus(neg_logit) * valid).sum(-1)
        return (loss_pos + loss_neg).mean()

    return objective


def sampled_softmax_logq(popularity: Tensor, negatives: int, generator: torch.Generator) -> Objective:
    """Softmax over the target and negatives shared by the batch, drawn by popularity, with log-Q correction.

    Subtracting log q(item) from each logit makes the sampled softmax an unbiased estimate of the full one
    (Bengio & Senécal 2008; Yi et al. 2019), for catalogues too large for a full softmax.
    """
    probs = popularity.double().clamp_min(0) + 1.0
    probs[0] = 0.0
    probs = probs / probs.sum()
    log_q = probs.clamp_min(1e-30).log().float()

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: ItemBias | None = None) -> Tensor:
        neg = torch.multinomial(probs, negatives, replacement=True, generator=generator).to(targets.device)
        pos_logit = (hidden * table[targets]).sum(-1, keepdim=True) - log_q[targets, None].to(hidden)
        neg_logit = hidden @ table[neg].T - log_q[neg].to(hidden)
        if extra is not None:
            pos_logit = pos_logit + extra.at(targets[:, None])
            neg_logit = neg_logit + extra.at(neg.expand(len(targets), -1))
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1)
        return F.cross_entropy(logits, torch.zeros_like(targets))

    return objective


def resolved_loss(name: str, n_items: int) -> str:
    """The objective `name` stands for with `n_items` items: `auto` is full-softmax CE up to
    `AUTO_FULL_SOFTMAX_ITEMS` items, sampled softmax with logQ correction above (docs/benchmarks.md measures
    both: CE's cost per trained position grows with the catalogue, the sampled one's does not)."""
    if name != "auto":
        return name
    return "ce" if n_items <= AUTO_FULL_SOFTMAX_ITEMS else "sampled_softmax"


def make_objective(
    name: str, n_items: int, negatives: int, popularity: Tensor, generator: torch.Generator
) -> Objective:
    """Build the objective named in the training config (`auto` resolved by `resolved_loss`)."""
    name = resolved_loss(name, n_items)
    if name == "ce":
        return full_softmax_ce()
    if name == "bce":
        return bce_negatives(n_items, negatives, generator)
    if name == "sampled_softmax":
        return sampled_softmax_logq(popularity, negatives, generator)
    raise ConfigError(f"unknown loss {name!r}; use auto, ce, bce or sampled_softmax.")
