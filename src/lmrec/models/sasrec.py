"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention Transformer over the item sequence.

Learned positions, item embeddings shared between input and output, and pre-norm blocks of the shared
`lmrec.models.transformer` under a causal mask. Trained on every position of a window at once (one forward
pass per window) with the objective the trainer injects (full-softmax cross-entropy by default, as in
SASRec+ of Klenitskiy & Vasilev 2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.base import NextItemConfig, SequentialRecommender, register
from lmrec.models.transformer import TransformerBlock, attention_mask, init_weights


class SASRecConfig(NextItemConfig):
    """SASRec hyper-parameters."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    ffn_mult: int = Field(4, ge=1)


@register("sasrec")
class SASRec(SequentialRecommender):
    """Causal Transformer next-item model with shared input/output item embeddings."""

    Config = SASRecConfig
    explain_method = "attention"
    item_keys = ("item_emb.weight",)

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__(n_items, config)
        self.cfg = config
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len + 1, config.hidden)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden, config.heads, config.dropout, config.ffn_mult, norm_first=True)
            for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(config.hidden)
        self.apply(init_weights)

    def input_embeddings(self, inputs: Tensor) -> Tensor:
        """Item representations of the input ids `[B, T] → [B, T, d]`, scaled by √d as in the Transformer."""
        return self.item_emb(inputs) * math.sqrt(self.cfg.hidden)

    def output_embeddings(self) -> Tensor:
        """The shared item table."""
        return self.item_emb.weight

    def _encode(self, inputs: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """States `[B, T, d]` of the last `max_len` right-aligned inputs and, if asked, per-layer weights."""
        inputs = inputs[:, -self.max_len :]
        length = inputs.shape[1]
        # Positions count back from the most recent item, so right-aligned inputs of any width agree.
        positions = torch.arange(length - 1, -1, -1, device=inputs.device)
        x = self.input_embeddings(inputs) + self.pos_emb(positions)
        x = self.emb_drop(x)
        allowed = attention_mask(inputs, causal=True)
        weights = []
        for block in self.blocks:
            x, w = block(x, allowed, need_weights)
            if w is not None:
                weights.append(w)
        return self.ln_f(x), weights

    def hidden(self, inputs: Tensor) -> Tensor:
        """Hidden state of every position of right-aligned inputs."""
        return self._encode(inputs)[0]

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """Attention of the last position over the history, rolled out through the layers (Abnar & Zuidema).

        The same weights explain every recommended item of a row: attention says what the model read,
        not why one candidate beat another; occlusion (the base class) answers that at K× the cost.
        """
        inputs = history[:, -self.max_len :]
        _, weights = self._encode(inputs, need_weights=True)
        length = inputs.shape[1]
        eye = torch.eye(length, device=inputs.device)
        rollout = eye.expand(inputs.shape[0], length, length)
        for w in weights:
            mixed = 0.5 * w.mean(1) + 0.5 * eye
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        last = rollout[:, -1] * (inputs > 0)
        last = last / last.sum(-1, keepdim=True).clamp_min(1e-12)
        pad = history.shape[1] - length
        last = F.pad(last, (pad, 0))
        return last[:, None, :].expand(-1, items.shape[1], -1)
