"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention Transformer over the item sequence.

Learned positions, item embeddings shared between input and output, pre-norm blocks. Trained on every
position of a window at once (one forward pass per window) with the objective the trainer injects
(full-softmax cross-entropy by default, as in SASRec+ of Klenitskiy & Vasilev 2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.base import NextItemConfig, SequentialRecommender, register


class SASRecConfig(NextItemConfig):
    """SASRec hyper-parameters."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    ffn_mult: int = Field(4, ge=1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions ≤ t that are not padding."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """`allowed` is a [B, 1, T, T] boolean mask; returns outputs and (optionally) head-mean weights."""
        bsz, length, hidden = x.shape
        q, k, v = self.qkv(x).view(bsz, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        if not need_weights:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
            weights = None
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
            y = att @ v
            weights = att.mean(1)
        return self.out(y.transpose(1, 2).reshape(bsz, length, hidden)), weights


class Block(nn.Module):
    """Pre-norm Transformer block: attention then a GELU feed-forward, each with a residual."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg.hidden, cfg.heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.ffn_mult * cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.hidden, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """One block; returns the new states and the attention weights when asked."""
        y, weights = self.attn(self.ln1(x), allowed, need_weights)
        x = x + self.drop(y)
        return x + self.ffn(self.ln2(x)), weights


@register("sasrec")
class SASRec(SequentialRecommender):
    """Causal Transformer next-item model with shared input/output item embeddings."""

    Config = SASRecConfig
    explain_method = "attention"

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__(n_items, config)
        self.cfg = config
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len + 1, config.hidden)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.hidden)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    def input_embeddings(self, inputs: Tensor) -> Tensor:
        """Item representations of the input ids `[B, T] → [B, T, d]`, scaled by √d as in the Transformer."""
        return self.item_emb(inputs) * math.sqrt(self.cfg.hidden)

    def output_embeddings(self) -> Tensor:
        """The shared item table."""
        return self.item_emb.weight

    def _encode(self, inputs: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        inputs = inputs[:, -self.max_len :]
        length = inputs.shape[1]
        # Positions count back from the most recent item, so right-aligned inputs of any width agree.
        positions = torch.arange(length - 1, -1, -1, device=inputs.device)
        x = self.input_embeddings(inputs) + self.pos_emb(positions)
        x = self.emb_drop(x)
        real = inputs > 0
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=inputs.device)
        # A padding query may attend to itself only, which keeps softmax finite without touching real rows.
        allowed = (causal & real[:, None, :]) | eye
        allowed = allowed[:, None]
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
            mixed = 0.5 * w + 0.5 * eye
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        last = rollout[:, -1] * (inputs > 0)
        last = last / last.sum(-1, keepdim=True).clamp_min(1e-12)
        pad = history.shape[1] - length
        last = F.pad(last, (pad, 0))
        return last[:, None, :].expand(-1, items.shape[1], -1)
