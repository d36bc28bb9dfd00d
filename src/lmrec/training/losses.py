"""Training objectives over an item table: full-softmax CE, BCE with sampled negatives, sampled softmax.

Each objective maps (hidden [N, d], targets [N] item ids ≥ 1, item table [n_items + 1, d], and optional
additive logits extra [N, n_items + 1]) to a scalar. Row 0 of the table is padding and never a candidate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmrec.errors import ConfigError
from lmrec.models.base import Objective


def full_softmax_ce() -> Objective:
    """Cross-entropy over the whole catalogue (SASRec+): the strongest choice when it fits in memory."""

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: Tensor | None = None) -> Tensor:
        logits = hidden @ table[1:].T
        if extra is not None:
            logits = logits + extra[:, 1:]
        return F.cross_entropy(logits, targets - 1)

    return objective


def bce_negatives(n_items: int, negatives: int, generator: torch.Generator) -> Objective:
    """Binary cross-entropy of each target against `negatives` uniformly sampled items (original SASRec)."""

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: Tensor | None = None) -> Tensor:
        neg = torch.randint(1, n_items + 1, (targets.shape[0], negatives), generator=generator)
        neg = neg.to(targets.device)
        pos_logit = (hidden * table[targets]).sum(-1)
        neg_logit = torch.einsum("nd,nkd->nk", hidden, table[neg])
        if extra is not None:
            pos_logit = pos_logit + extra.gather(1, targets[:, None])[:, 0]
            neg_logit = neg_logit + extra.gather(1, neg)
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

    def objective(hidden: Tensor, targets: Tensor, table: Tensor, extra: Tensor | None = None) -> Tensor:
        neg = torch.multinomial(probs, negatives, replacement=True, generator=generator).to(targets.device)
        pos_logit = (hidden * table[targets]).sum(-1, keepdim=True) - log_q[targets, None].to(hidden)
        neg_logit = hidden @ table[neg].T - log_q[neg].to(hidden)
        if extra is not None:
            pos_logit = pos_logit + extra.gather(1, targets[:, None])
            neg_logit = neg_logit + extra[:, neg]
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1)
        return F.cross_entropy(logits, torch.zeros_like(targets))

    return objective


def make_objective(
    name: str, n_items: int, negatives: int, popularity: Tensor, generator: torch.Generator
) -> Objective:
    """Build the objective named in the training config."""
    if name == "ce":
        return full_softmax_ce()
    if name == "bce":
        return bce_negatives(n_items, negatives, generator)
    if name == "sampled_softmax":
        return sampled_softmax_logq(popularity, negatives, generator)
    raise ConfigError(f"unknown loss {name!r}; use ce, bce or sampled_softmax.")
