"""The Transformer encoder block shared by SASRec, lmrec (through SASRec) and BERT4Rec.

Owns multi-head self-attention, the key mask that says which positions a query sees (causal for SASRec,
both directions for BERT4Rec; never padding), and the block around the attention, pre-norm (SASRec) or
post-norm (BERT) by `norm_first`. The attention also takes projected inputs and leaves out the output
projection (`attend`), so that SASRec's occlusion can reuse projections and project only what it keeps.
"""

from __future__ import annotations

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

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """Outputs `[B, T, d]` of inputs `[B, T, d]` for `allowed` `[B, 1, T, T]`."""
        return self.out(self.attend(self.qkv(x), allowed))

    def attend(self, qkv: Tensor, allowed: Tensor) -> Tensor:
        """The heads' outputs `[B, T, d]`, before the output projection, for projected inputs `qkv` `[B, T, 3d]`."""
        bsz, length, width = qkv.shape
        q, k, v = qkv.view(bsz, length, 3, self.heads, width // (3 * self.heads)).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return y.transpose(1, 2).reshape(bsz, length, width // 3)


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

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """New states `[B, T, d]` of states `[B, T, d]` for `allowed` `[B, 1, T, T]`."""
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln1(x), allowed))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, allowed)))
        return self.ln2(x + self.drop(self.ffn(x)))


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation, applied module by module: N(0, 0.02) weights, zero biases, a zero padding row."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])
