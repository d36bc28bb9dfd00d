"""The Transformer encoder block shared by SASRec, lmrec (through SASRec) and BERT4Rec.

Owns multi-head self-attention, the key mask that says which positions a query sees (causal for SASRec,
both directions for BERT4Rec; never padding), and the block around the attention, pre-norm (SASRec) or
post-norm (BERT) by `norm_first`. Attention weights come back when asked, for attention explanations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attention_mask(inputs: Tensor, causal: bool) -> Tensor:
    """Keys each query may see `[B, 1, T, T]` for ids `[B, T]`: real items, and only earlier ones if `causal`."""
    length = inputs.shape[1]
    allowed = (inputs > 0)[:, None, :]
    if causal:
        allowed = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril() & allowed
    # Every query sees itself too: only padding queries gain by it (a finite softmax); real ones already do.
    return (allowed | torch.eye(length, dtype=torch.bool, device=inputs.device))[:, None]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over the keys a boolean mask allows."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Outputs `[B, T, d]` for `allowed` `[B, 1, T, T]`, and the per-head weights `[B, H, T, T]` if asked."""
        bsz, length, hidden = x.shape
        q, k, v = self.qkv(x).view(bsz, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        if need_weights:
            # The same function as the fused kernel, spelled out so that the weights can be kept.
            weights = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
            weights = weights.softmax(-1)
            y = F.dropout(weights, drop) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(bsz, length, hidden)), weights


class TransformerBlock(nn.Module):
    """Self-attention then a GELU feed-forward, each a residual branch with dropout and a LayerNorm.

    `norm_first` normalises each branch's input (pre-norm, SASRec) instead of each residual sum (post-norm,
    BERT). Submodules are registered in the order they act, which fixes `parameters()` order: saved
    optimizer states are indexed by it.
    """

    def __init__(self, hidden: int, heads: int, dropout: float, ffn_mult: int, *, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn = MultiHeadSelfAttention(hidden, heads, dropout)
        ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), nn.GELU(), nn.Linear(ffn_mult * hidden, hidden))
        if norm_first:
            self.ln1 = nn.LayerNorm(hidden)
            self.attn = attn
            self.ln2 = nn.LayerNorm(hidden)
            self.ffn = ffn
        else:
            self.attn = attn
            self.ln1 = nn.LayerNorm(hidden)
            self.ffn = ffn
            self.ln2 = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """New states `[B, T, d]` and, when asked, the per-head attention weights `[B, H, T, T]`."""
        if self.norm_first:
            y, weights = self.attn(self.ln1(x), allowed, need_weights)
            x = x + self.drop(y)
            return x + self.drop(self.ffn(self.ln2(x))), weights
        y, weights = self.attn(x, allowed, need_weights)
        x = self.ln1(x + self.drop(y))
        return self.ln2(x + self.drop(self.ffn(x))), weights


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation, applied module by module: N(0, 0.02) weights, zero biases, a zero padding row."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])
