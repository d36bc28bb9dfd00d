"""Pop: recommend the items seen most often in training, the same list for everyone.

The baseline every sequential model must beat; it has no parameters to train, only counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmrec.errors import ExplanationUnavailable
from lmrec.models.base import ModelConfig, SequentialRecommender, register


class PopConfig(ModelConfig):
    """Pop has only the shared settings; `max_len` does not change its scores."""


@register("pop")
class Pop(SequentialRecommender):
    """Scores every item by its number of occurrences in the training sequences."""

    Config = PopConfig
    trainable = False
    explain_method = "none"

    def __init__(self, n_items: int, config: PopConfig) -> None:
        super().__init__(n_items, config)
        self.counts: Tensor
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit_statistics(self, sequences: list[Tensor]) -> None:
        """Count every training event (repeats included); kept as a buffer so checkpoints carry it."""
        counts = torch.zeros(self.n_items + 1, dtype=torch.long)
        if sequences:
            counts = torch.bincount(torch.cat(sequences).long(), minlength=self.n_items + 1)
        self.counts.copy_(counts)

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """The training counts for every row, whatever the history; column 0 is -inf."""
        scores = self.counts.expand(history.shape[0], -1).clone()
        return self.mask_padding(scores)

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """Pop ignores the history, so no past event explains its recommendations."""
        raise ExplanationUnavailable(
            "model pop recommends by overall popularity and ignores the history, so it cannot explain "
            "a recommendation; use a sequential model (e.g. sasrec) for explanations."
        )
