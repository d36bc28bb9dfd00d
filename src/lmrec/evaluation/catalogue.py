"""A model scored on a grown catalogue: its own item ids mapped to another preparation's.

A retraining gate compares the served version, which knows the parent preparation's item ids, with a
candidate on the snapshot's. Wrapping the served model lets the one evaluator rank both on the snapshot's
targets: histories are translated to the model's ids (items it never knew are dropped, the rest stay
in order, right-aligned), and its scores are spread back over the snapshot's ids, items it cannot score
last (-inf), as the served version would treat them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lmrec.models.base import NEG_INF, ModelConfig, SequentialRecommender


class MappedCatalogue(SequentialRecommender):
    """`inner` (trained on another preparation) seen through `mapping`: new item index → inner index or -1."""

    trainable = False

    def __init__(self, inner: SequentialRecommender, mapping: np.ndarray) -> None:
        super().__init__(len(mapping) - 1, ModelConfig(max_len=inner.max_len))
        if int(mapping.max(initial=0)) > inner.n_items:
            raise ValueError(f"the item map points past the model's {inner.n_items} items")
        self.inner = inner.eval()
        self.register_buffer("to_inner", torch.from_numpy(np.maximum(mapping, 0)).long())
        known = np.flatnonzero(mapping > 0)
        self.register_buffer("known", torch.from_numpy(known).long())
        self.register_buffer("known_inner", torch.from_numpy(mapping[known]).long())

    def translate(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """The history in the inner model's ids, unknown items dropped and the rest right-aligned."""
        inner = self.to_inner[history]
        order = torch.argsort((inner > 0).int(), dim=1, stable=True)  # padding first, real items in order
        inner = inner.gather(1, order)
        return inner, (inner > 0).sum(1)

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """The inner model's scores over this catalogue; items it does not know score -inf."""
        inner, inner_lengths = self.translate(history)
        scores = self.inner.score_all(inner, inner_lengths)
        out = scores.new_full((history.shape[0], self.n_items + 1), NEG_INF)
        out[:, self.known] = scores[:, self.known_inner]
        return out
