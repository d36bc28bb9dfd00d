"""Behaviour classifier: a cross-encoder reading `[recent history] [SEP] [candidate]`, plus user and item biases.

The logit that a user does the behaviour (like, click, purchase) with a candidate item is

    head(mean-pooled encoder states of the pair) + global bias + user bias + item bias + w · history features,

i.e. a regularised logistic regression on user and item ids and on features of the user's strict past
that are defined for users the training log never saw (`HISTORY_FEATURES`: their past label rate, how
their labels departed from the items' training rates, and that departure on items whose text resembles
the candidate's), whose residual the language model explains from the texts. Users and items without
training examples use slot 0 of their bias table (the fallback).
Building the backbone from a folder is in `lmrec.inference.classifier`, training in `lmrec.training.classifier`;
this module reads no files.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

FALLBACK = 0  # bias-table slot of users and items without training examples
HISTORY_JOIN = " ; "
RATE_PSEUDO_COUNT = 5.0  # prior events at the training rate that a user's past label rate is shrunk with
# Columns of the history-feature matrix that enters the bias terms (computed by `lmrec.models.classifier`).
HISTORY_FEATURES = ("past_rate", "past_residual", "text_affinity")


def pair_token_lengths(tokenizer, histories: list[str], candidates: list[str]) -> np.ndarray:
    """Untruncated token count of each (history, candidate) pair, special tokens included."""
    if not histories:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(histories, candidates, truncation=False, verbose=False)["input_ids"]
    return np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(histories))


def tokenize_pairs(tokenizer, histories: list[str], candidates: list[str], max_length: int) -> dict[str, Tensor]:
    """Padded token tensors of (history, candidate) pairs cut to `max_length` tokens.

    "longest_first" removes tokens from the end of the longer side, which is the history (most recent
    event first, so the oldest go) unless the candidate alone takes more than half the budget.
    """
    batch = tokenizer(
        histories, candidates, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
    )
    return dict(batch)


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of the token states where `mask` is 1 (not normalised: the head reads magnitudes too)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class CrossEncoder(nn.Module):
    """Pair encoder → mean pool → linear head, plus global, user and item bias terms, giving one logit per pair.

    The head starts at zero, so an untrained cross-encoder predicts exactly what its bias terms predict.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, n_users: int, n_items: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.global_bias = nn.Parameter(torch.zeros(1))
        self.feature_weights = nn.Parameter(torch.zeros(len(HISTORY_FEATURES)))
        self.user_bias = nn.Embedding(n_users + 1, 1)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("rate_prior", torch.zeros(()))
        self.register_buffer("item_rate", torch.zeros(n_items + 1, dtype=torch.float64))
        self.register_buffer("user_known", torch.zeros(n_users, dtype=torch.bool))
        self.register_buffer("item_known", torch.zeros(n_items + 1, dtype=torch.bool))

    def bias_parameters(self) -> list[nn.Parameter]:
        """The logistic-regression part: global, user and item biases and the history-feature weights."""
        return [self.global_bias, self.feature_weights, self.user_bias.weight, self.item_bias.weight]

    def past_rate(self, positives: Tensor, counts: Tensor) -> Tensor:
        """Centred past label rate: (positives + k·prior) / (count + k) − prior, k = RATE_PSEUDO_COUNT."""
        prior = self.rate_prior.to(positives.dtype)
        return (positives + RATE_PSEUDO_COUNT * prior) / (counts + RATE_PSEUDO_COUNT) - prior

    def user_slots(self, users: Tensor) -> Tensor:
        """Bias-table rows of user indices: user u → u + 1 when known, else the fallback (also for u < 0)."""
        valid = users >= 0
        known = valid & self.user_known[users.clamp(min=0)]
        return torch.where(known, users + 1, torch.full_like(users, FALLBACK))

    def item_slots(self, items: Tensor) -> Tensor:
        """Bias-table rows of item indices: the item itself when known, else the fallback (slot 0, padding)."""
        return torch.where(self.item_known[items], items, torch.full_like(items, FALLBACK))

    def bias_logit(self, users: Tensor, items: Tensor, features: Tensor, drop_user: Tensor | None = None) -> Tensor:
        """[B] logits of the bias terms alone; `features` is [B, len(HISTORY_FEATURES)], `drop_user` marks
        examples that get the fallback user bias."""
        slots = self.user_slots(users)
        if drop_user is not None:
            slots = torch.where(drop_user, torch.full_like(slots, FALLBACK), slots)
        user = self.user_bias(slots).squeeze(-1)
        item = self.item_bias(self.item_slots(items)).squeeze(-1)
        return self.global_bias + user + item + features.to(self.feature_weights.dtype) @ self.feature_weights

    def text_logit(self, tokens: Mapping[str, Tensor]) -> Tensor:
        """[B] logits of the cross-encoder part from a tokenized batch of pairs."""
        hidden = self.backbone(**tokens).last_hidden_state
        return self.head(self.dropout(masked_mean(hidden, tokens["attention_mask"]))).squeeze(-1)

    def forward(
        self,
        tokens: Mapping[str, Tensor],
        users: Tensor,
        items: Tensor,
        features: Tensor,
        drop_user: Tensor | None = None,
    ) -> Tensor:
        """[B] logits of the behaviour for each (user, history, candidate) example."""
        return self.text_logit(tokens) + self.bias_logit(users, items, features, drop_user)
