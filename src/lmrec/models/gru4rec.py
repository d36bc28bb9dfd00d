"""GRU4Rec (Hidasi et al., ICLR 2016) in its RecBole form: a GRU over item embeddings.

Each step's GRU state is projected to the embedding size and scored against the same item table as
the input (shared embeddings, as in RecBole and Hidasi & Karatzoglou 2018), and the model is trained on
every position of a window with the objective the trainer injects (full-softmax CE by default).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.base import NextItemConfig, SequentialRecommender, register


class GRU4RecConfig(NextItemConfig):
    """GRU4Rec hyper-parameters (RecBole's defaults)."""

    embedding: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)


@register("gru4rec")
class GRU4Rec(SequentialRecommender):
    """Recurrent next-item model: embedding → dropout → GRU → projection, scored by the item table."""

    Config = GRU4RecConfig
    item_keys = ("item_emb.weight",)

    def __init__(self, n_items: int, config: GRU4RecConfig) -> None:
        super().__init__(n_items, config)
        self.item_emb = nn.Embedding(n_items + 1, config.embedding, padding_idx=0)
        self.emb_drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding, config.hidden, config.layers, batch_first=True)
        self.proj = nn.Linear(config.hidden, config.embedding)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def output_embeddings(self) -> Tensor:
        """The shared item table."""
        return self.item_emb.weight

    def hidden(self, inputs: Tensor) -> Tensor:
        """Projected GRU state after each position of right-aligned inputs `[B, T]` → `[B, T, d]`.

        Rows are rotated so that their items start at column 0 and the padding trails: the GRU then
        starts from its zero state at the first real item, so left padding cannot change any real
        position's state. Padding positions (an empty history) get the projection of the zero state.
        """
        length = inputs.shape[1]
        real = inputs > 0
        pad = (~real).sum(1, keepdim=True)
        cols = torch.arange(length, device=inputs.device)
        left_aligned = inputs.gather(1, (cols + pad) % length)
        states, _ = self.gru(self.emb_drop(self.item_emb(left_aligned)))
        back = ((cols - pad) % length)[:, :, None].expand_as(states)
        states = states.gather(1, back) * real[:, :, None]
        return self.proj(states)
