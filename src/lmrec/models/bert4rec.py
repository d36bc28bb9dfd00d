"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained to fill in masked items (cloze).

Training replaces random items of a window by a [MASK] token (id n_items + 1, an input-only token) and
predicts the originals; inference appends [MASK] after the history and predicts what fills it. Post-norm
BERT blocks of the shared `lmrec.models.transformer` under a bidirectional mask, learned positions counted
back from the most recent slot, an output head (dense, GELU, LayerNorm) and an item table shared with the
input embeddings plus a per-item output bias, as in the original implementation.
"""

from __future__ import annotations

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from lmrec.models.base import Batch, ModelConfig, SequentialRecommender, register
from lmrec.models.transformer import TransformerBlock, attention_mask, init_weights


class BERT4RecConfig(ModelConfig):
    """BERT4Rec hyper-parameters (the paper's architecture; mask_prob 0.2 as for MovieLens-1M)."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    ffn_mult: int = Field(4, ge=1)
    mask_prob: float = Field(0.2, gt=0, le=1)
    mask_last_prob: float = Field(0.1, ge=0, le=1)

    @field_validator("heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden")
        if hidden is not None and hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        return heads


@register("bert4rec")
class BERT4Rec(SequentialRecommender):
    """Bidirectional cloze model; scores come from the [MASK] slot appended after the history."""

    Config = BERT4RecConfig
    item_keys = ("item_emb.weight", "out_bias")

    def __init__(self, n_items: int, config: BERT4RecConfig) -> None:
        super().__init__(n_items, config)
        self.cfg = config
        self.mask_id = n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len + 1, config.hidden)
        self.emb_norm = nn.LayerNorm(config.hidden)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden, config.heads, config.dropout, config.ffn_mult, norm_first=False)
            for _ in range(config.layers)
        )
        self.head = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.GELU(), nn.LayerNorm(config.hidden))
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.apply(init_weights)

    def output_embeddings(self) -> Tensor:
        """Item table `[n_items + 1, d + 1]`: the input embeddings (without [MASK]) and the output bias.

        The bias rides in an extra column, matched by a constant 1 that `_query` appends to every hidden
        state, so any injected objective (`hidden @ table.T`) adds it without knowing about it.
        """
        return torch.cat([self.item_emb.weight[: self.n_items + 1], self.out_bias[:, None]], 1)

    def _query(self, states: Tensor) -> Tensor:
        """Output-head vectors `[..., d + 1]` that score against `output_embeddings()`."""
        out = self.head(states)
        return torch.cat([out, torch.ones_like(out[..., :1])], -1)

    def _encode(self, inputs: Tensor) -> Tensor:
        """States `[B, T, d]` of right-aligned inputs (T ≤ max_len + 1)."""
        length = inputs.shape[1]
        # Positions count back from the most recent slot, so inputs of any width agree.
        positions = torch.arange(length - 1, -1, -1, device=inputs.device)
        x = self.emb_drop(self.emb_norm(self.item_emb(inputs) + self.pos_emb(positions)))
        allowed = attention_mask(inputs, causal=False)
        for block in self.blocks:
            x = block(x, allowed)
        return x

    def cloze_mask(self, items: Tensor) -> Tensor:
        """Positions to mask `[B, T]`: each real item with `mask_prob`, the last with `mask_last_prob` more.

        Every row with an item gets at least one masked position (a random real one if the draw gave
        none); masking the last item trains exactly the inference task (predict after the history).
        """
        real = items > 0
        draw = torch.rand(items.shape, device=items.device)
        masked = (draw < self.cfg.mask_prob) & real
        last = torch.rand(items.shape[0], device=items.device) < self.cfg.mask_last_prob
        masked[:, -1] |= last & real[:, -1]
        missing = real.any(1) & ~masked.any(1)
        pick = draw.masked_fill(~real, -1.0).argmax(1, keepdim=True)
        return masked.scatter(1, pick, masked.gather(1, pick) | missing[:, None])

    def loss(self, batch: Batch) -> Tensor:
        """Injected objective over the masked positions, with the original items as targets."""
        if self.objective is None:
            raise TypeError("no training objective set; the trainer injects one from lmrec.training.losses")
        items = batch.items[:, -(self.max_len + 1) :]
        masked = self.cloze_mask(items)
        states = self._encode(items.masked_fill(masked, self.mask_id))
        return self.objective(self._query(states[masked]), items[masked], self.output_embeddings())

    def _with_mask_slot(self, history: Tensor) -> Tensor:
        """The last `max_len` history items followed by [MASK]: `[B, min(L, max_len) + 1]`."""
        history = history[:, -self.max_len :]
        return torch.cat([history, torch.full_like(history[:, :1], self.mask_id)], 1)

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """Scores of the [MASK] slot after the history; the [MASK] id itself is never a column."""
        states = self._encode(self._with_mask_slot(history))
        return self.mask_padding(self._query(states[:, -1]) @ self.output_embeddings().T)
