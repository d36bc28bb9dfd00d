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

    def _states(self, inputs: Tensor) -> list[Tensor]:
        """The input of every block and the last block's output `[B, T, d]`, for the last `max_len` inputs."""
        inputs = inputs[:, -self.max_len :]
        length = inputs.shape[1]
        # Positions count back from the most recent item, so right-aligned inputs of any width agree.
        positions = torch.arange(length - 1, -1, -1, device=inputs.device)
        states = [self.emb_drop(self.input_embeddings(inputs) + self.pos_emb(positions))]
        allowed = attention_mask(inputs, causal=True)
        for block in self.blocks:
            states.append(block(states[-1], allowed))
        return states

    def hidden(self, inputs: Tensor) -> Tensor:
        """Hidden state of every position of right-aligned inputs."""
        return self.ln_f(self._states(inputs)[-1])

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """The base class's occlusion per item, computed exactly at a fraction of its cost.

        Without window event j, the states before j are those of the window shifted back one slot (the
        attention is causal and positions count from the end) and the embeddings after j are unchanged: all
        removals from a window share those, only the states after j are computed again, and in the last block
        only the most recent one.
        """
        if self.training:  # dropout would draw differently for the shared and the recomputed states
            return super().explain(history, lengths, items)
        weights = torch.zeros(*items.shape, history.shape[1], device=history.device)
        window = history[:, -self.max_len :]
        bsz, width = window.shape
        older = history[:, -width - 1 : -width] if history.shape[1] > width else torch.zeros_like(window[:, :1])
        extended = torch.cat([older, window], 1)  # [B, T + 1]: the window and the event just before it
        with torch.no_grad():
            states = self._states(torch.cat([window, extended[:, :-1]]))  # the window, then shifted back one slot
            full = self.ln_f(states[-1][:bsz, -1:])
            for row in range(bsz):
                cols = window[row].nonzero()[:, 0]
                if not len(cols):
                    continue
                shifted = [s[bsz + row] for s in states]
                occluded, hidden = self._occluded(extended[row], cols, states[0][row], shifted)
                scores = self._item_scores(
                    torch.cat([full[row], hidden]), torch.cat([window[row : row + 1], occluded]), items[row]
                )
                weights[row, :, history.shape[1] - width + cols] = (scores[0] - scores[1:]).T
        return weights

    def _occluded(
        self, extended: Tensor, cols: Tensor, embedded: Tensor, shifted: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """(windows `[N, T]`, last hidden states `[N, d]`) of one window without each of its events `cols`, from
        its ids after the event before it (`extended` `[T + 1]`), its embeddings `[T, d]` and the block states of
        the window shifted back one slot."""
        width = len(embedded)
        before = _before(cols, width)
        occluded = torch.where(before, extended[:-1], extended[1:])
        later = (~before).flatten().nonzero()[:, 0]  # slots after the removed events, in the [N * T] grid
        x = embedded[later % width]  # their states, computed again from the window's own embeddings
        for depth, block in enumerate(self.blocks[:-1]):
            if depth:
                qkv = block.attn.qkv(block.ln1(shifted[depth])).repeat(len(cols), 1)
                qkv = qkv.index_copy_(0, later, block.attn.qkv(block.ln1(x))).view(len(cols), width, -1)
                mixed = block.attn.attend(qkv, attention_mask(occluded, causal=True)).flatten(0, 1)[later]
            else:
                mixed = self._first_attention(block, embedded, shifted[0], extended[:-1], cols, later)
            x = x + block.attn.out(mixed)
            x = x + block.ffn(block.ln2(x))
        recent = x[later % width == width - 1]  # the most recent slot, where it was computed again
        last = shifted[-2][-1].repeat(len(cols), 1).index_copy_(0, (cols < width - 1).nonzero()[:, 0], recent)
        last = last + self._last_attention(self.blocks[-1], last, occluded, later, x, shifted[-2])
        return occluded, self.ln_f(last + self.blocks[-1].ffn(self.blocks[-1].ln2(last)))

    @staticmethod
    def _first_attention(
        block: TransformerBlock, embedded: Tensor, shifted: Tensor, earlier: Tensor, cols: Tensor, later: Tensor
    ) -> Tensor:
        """The first block's attention `[S, d]` (before its output projection) at the slots `later` after each
        removed event. Queries and later keys come from the window's embeddings `[T, d]`, earlier keys from the
        shifted window's (`earlier` `[T]`: its item ids), so the softmax at slot i without event j sums the
        shifted keys up to j and the window's keys after j: running sums along two `[T, T]` tables per head."""
        width, hidden = embedded.shape
        heads = block.attn.heads
        q, k, v = block.attn.qkv(block.ln1(torch.cat([shifted, embedded]))).view(2, width, 3, heads, -1).unbind(2)
        k, v = torch.stack([k[0], k[1].flip(0)]), torch.stack([v[0], v[1].flip(0)])  # the window's keys latest first
        slots = torch.arange(width, device=cols.device)
        seen = torch.stack([(earlier > 0).expand(width, -1), slots[:, None] >= slots.flip(0)[None, :]])[:, None]
        logits = torch.einsum("ihe,gche->ghic", q[1] / math.sqrt(hidden // heads), k).masked_fill(~seen, -math.inf)
        weights = (logits - logits.amax((0, 3), keepdim=True)).exp()  # [2, H, T, T]; each query sees itself
        values = torch.cat([v, torch.ones_like(v[..., :1])], -1).permute(0, 2, 1, 3)  # [2, H, T, d / H + 1]
        sums = (weights[..., None] * values[:, :, None]).cumsum(3)  # numerators and denominator, key by key
        removed, slot = cols[later // width], later % width
        total = sums[0][:, slot, removed] + sums[1][:, slot, width - 2 - removed]  # [H, S, d / H + 1]
        return (total[..., :-1] / total[..., -1:]).transpose(0, 1).flatten(1)

    @staticmethod
    def _last_attention(
        block: TransformerBlock, last: Tensor, occluded: Tensor, later: Tensor, x: Tensor, shifted: Tensor
    ) -> Tensor:
        """The last block's attention output `[N, d]` at the most recent slot `last` `[N, d]` of each window:
        keys and values of the shifted window's states `[T, d]` before the removed event, of `x` after it."""
        count, width = occluded.shape
        hidden, heads = last.shape[1], block.attn.heads
        weight, bias = block.attn.qkv.weight, block.attn.qkv.bias
        query = F.linear(block.ln1(last), weight[:hidden], bias[:hidden]).view(count, 1, heads, -1).transpose(1, 2)
        kv = F.linear(block.ln1(shifted), weight[hidden:], bias[hidden:]).repeat(count, 1)
        kv = kv.index_copy_(0, later, F.linear(block.ln1(x), weight[hidden:], bias[hidden:]))
        k, v = kv.view(count, width, 2, heads, -1).permute(2, 0, 3, 1, 4)
        seen = (occluded > 0).index_fill_(1, torch.tensor([width - 1], device=occluded.device), True)
        mixed = F.scaled_dot_product_attention(query, k, v, attn_mask=seen[:, None, None, :])
        return block.attn.out(mixed.reshape(count, hidden))

    def _item_scores(self, hidden: Tensor, windows: Tensor, items: Tensor) -> Tensor:
        """Scores `[N, K]` of `items` `[K]` for last hidden states `[N, d]` after `windows` `[N, T]`, as `score_all`."""
        scores = hidden @ self.output_embeddings()[items].T
        if hasattr(self, "seen_weight"):
            scores = scores + self.seen_weight * (windows[:, None, :] == items[None, :, None]).any(-1)
        return scores


def _before(cols: Tensor, width: int) -> Tensor:
    """`[N, T]` bool: the slots up to `cols[n]`, which hold the shifted window once event `cols[n]` is removed."""
    return torch.arange(width, device=cols.device)[None, :] <= cols[:, None]
