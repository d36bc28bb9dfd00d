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

    def _embedded(self, inputs: Tensor) -> Tensor:
        """Input states `[B, T, d]` of right-aligned ids `[B, T]`: item representations plus positions, which
        count back from the most recent item so that right-aligned inputs of any width agree."""
        positions = torch.arange(inputs.shape[1] - 1, -1, -1, device=inputs.device)
        return self.emb_drop(self.input_embeddings(inputs) + self.pos_emb(positions))

    def _blocks(self, x: Tensor, real: Tensor) -> list[Tensor]:
        """The input of every block and the last block's output `[B, T, d]` for input states `x` `[B, T, d]`
        whose slots `real` `[B, T]` hold an event."""
        states, allowed = [x], attention_mask(real, causal=True)
        for block in self.blocks:
            states.append(block(states[-1], allowed))
        return states

    def _states(self, inputs: Tensor) -> list[Tensor]:
        """The input of every block and the last block's output `[B, T, d]`, for the last `max_len` inputs."""
        inputs = inputs[:, -self.max_len :]
        return self._blocks(self._embedded(inputs), inputs > 0)

    def hidden(self, inputs: Tensor) -> Tensor:
        """Hidden state of every position of right-aligned inputs."""
        return self.ln_f(self._states(inputs)[-1])

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """The base class's occlusion per item, computed exactly at a fraction of its cost (`occlusion_states`)."""
        if self.training:  # dropout would draw differently for the shared and the recomputed states
            return super().explain(history, lengths, items)
        weights = torch.zeros(*items.shape, history.shape[1], device=history.device)
        window = history[:, -self.max_len :]
        width = window.shape[1]
        older = history[:, -width - 1 : -width] if history.shape[1] > width else torch.zeros_like(window[:, :1])
        extended = torch.cat([older, window], 1)  # [B, T + 1]: the window and the event just before it
        with torch.no_grad():
            for row in range(len(window)):
                real = window[row].nonzero()[:, 0]
                if not len(real):
                    continue
                ids = extended[row, real[0] :]  # the row's events and the one before them (padding if none)
                embedded = self._embedded(torch.stack([ids[1:], ids[:-1]]))
                hidden = self.occlusion_states(embedded[0], embedded[1], ids[1:] > 0, ids[:-1] > 0)
                removed = torch.where(_before(len(ids) - 1), ids[None, :-1], ids[None, 1:])
                scores = self._item_scores(hidden, torch.cat([ids[None, 1:], removed]), items[row])
                weights[row, :, history.shape[1] - len(ids) + 1 :] = (scores[:1] - scores[1:]).T
        return weights

    def occlusion_states(self, embedded: Tensor, shifted: Tensor, real: Tensor, real_shifted: Tensor) -> Tensor:
        """Last hidden states `[T + 1, d]` of a window and of the window without each of its T slots.

        `embedded` `[T, d]` are the window's input states, `shifted` those of the window shifted back one slot
        (the event before it first), `real`/`real_shifted` `[T]` which slots hold an event. Row 0 is the whole
        window, row j + 1 the window without slot j (rows of padding slots are computed and meaningless).
        Without slot j, the states up to j are those of the shifted window (the attention is causal and
        positions count from the end) and the states after j see the same inputs: all removals share the two
        windows' states, only the states after each removed slot are computed again, and in the last block
        only the most recent one. Nothing depends on the values but the masks: no shape varies with the data.
        """
        width = len(embedded)
        states = self._blocks(torch.stack([embedded, shifted]), torch.stack([real, real_shifted]))
        removal, slot = torch.triu_indices(width, width, 1, device=embedded.device)  # slots after each removal
        before = _before(width, embedded.device)
        seen = (before & real_shifted) | (~before & real)  # [T, T]: slots with an event once slot j is removed
        x = embedded[slot]  # the states after each removed slot, computed again from the window's inputs
        for depth, block in enumerate(self.blocks[:-1]):
            if depth:
                later = removal * width + slot
                qkv = block.attn.qkv(block.ln1(states[depth][1])).repeat(width, 1)
                qkv = qkv.index_copy(0, later, block.attn.qkv(block.ln1(x))).view(width, width, -1)
                mixed = block.attn.attend(qkv, attention_mask(seen, causal=True)).flatten(0, 1)[later]
            else:
                mixed = _first_attention(block, embedded, shifted, real, real_shifted, removal, slot)
            x = x + block.attn.out(mixed)
            x = x + block.ffn(block.ln2(x))
        rows = torch.arange(width - 1, device=embedded.device)
        recent = rows * width - rows * (rows + 1) // 2 + width - 2 - rows  # the pairs (j, T - 1) among (removal, slot)
        last = torch.cat([x[recent], states[-2][1, -1:]])  # removing the most recent slot leaves the shifted state
        block = self.blocks[-1]
        last = last + block.attn.out(_last_attention(block, last, before, seen, removal, slot, x, states[-2][1]))
        last = last + block.ffn(block.ln2(last))
        return self.ln_f(torch.cat([states[-1][0, -1:], last]))

    def _item_scores(self, hidden: Tensor, windows: Tensor, items: Tensor) -> Tensor:
        """Scores `[N, K]` of `items` `[K]` for last hidden states `[N, d]` after `windows` `[N, T]`, as `score_all`."""
        scores = hidden @ self.output_embeddings()[items].T
        if hasattr(self, "seen_weight"):
            scores = scores + self.seen_weight * (windows[:, None, :] == items[None, :, None]).any(-1)
        return scores


def _before(width: int, device: torch.device | None = None) -> Tensor:
    """`[T, T]` bool: row j marks the slots up to j, which hold the shifted window once slot j is removed."""
    slots = torch.arange(width, device=device)
    return slots[None, :] <= slots[:, None]


def _heads(block: TransformerBlock, states: Tensor, first: int, count: int) -> Tensor:
    """`count` of the block's projections (query, key, value), from the `first`, of `states` `[S, d]`, split
    into heads `[S, count, H, d / H]`."""
    hidden, heads = states.shape[1], block.attn.heads
    rows = slice(first * hidden, (first + count) * hidden)
    projected = F.linear(block.ln1(states), block.attn.qkv.weight[rows], block.attn.qkv.bias[rows])
    return projected.view(len(states), count, heads, hidden // heads)


def _first_attention(
    block: TransformerBlock,
    embedded: Tensor,
    shifted: Tensor,
    real: Tensor,
    real_shifted: Tensor,
    removal: Tensor,
    slot: Tensor,
) -> Tensor:
    """The first block's attention `[S, d]` (before its output projection) at slot `slot[s]` of the window
    without slot `removal[s]` (< `slot[s]`): the query and the keys after the removed slot come from the
    window's input states `[T, d]`, the keys up to it from the shifted window's.

    With one stabiliser per query, a pair's softmax numerator and denominator are the window's own sums
    plus, key by key up to the removed slot, the shifted window's terms minus the window's: one running sum
    along a `[H, T, T, d / H + 1]` table, read at each pair.
    """
    width = len(embedded)
    q, k, v = _heads(block, embedded, 0, 3).unbind(1)  # [T, H, d / H] each
    k_old, v_old = _heads(block, shifted, 1, 2).unbind(1)
    q = q / math.sqrt(q.shape[-1])
    keys = torch.arange(width, device=slot.device)
    causal = keys[None, :] <= keys[:, None]
    own = torch.einsum("ihe,che->hic", q, k).masked_fill(
        ~((causal & real) | (keys[None, :] == keys[:, None])), -math.inf
    )
    old = torch.einsum("ihe,che->hic", q, k_old).masked_fill(~(causal & real_shifted), -math.inf)
    top = torch.maximum(own.amax(-1, keepdim=True), old.amax(-1, keepdim=True))
    own, old = (own - top).exp(), (old - top).exp()  # [H, T, T]
    ones = torch.ones_like(v[..., :1])
    v, v_old = torch.cat([v, ones], -1).transpose(0, 1), torch.cat([v_old, ones], -1).transpose(0, 1)
    change = (old[..., None] * v_old[:, None] - own[..., None] * v[:, None]).cumsum(2)  # [H, T, T, d / H + 1]
    total = (own @ v)[:, slot] + change[:, slot, removal]  # [H, S, d / H + 1]: numerators, then denominator
    return (total[..., :-1] / total[..., -1:]).transpose(0, 1).flatten(1)


def _last_attention(
    block: TransformerBlock,
    last: Tensor,
    before: Tensor,
    seen: Tensor,
    removal: Tensor,
    slot: Tensor,
    x: Tensor,
    shifted: Tensor,
) -> Tensor:
    """The last block's attention `[T, d]` (before its output projection) at the most recent slot `last`
    `[T, d]` of the window without each slot j: keys and values from the shifted window's states `[T, d]` at
    the slots up to j (`before` `[T, T]`), from the recomputed states `x` `[S, d]` at the slots `slot` after
    their `removal`; `seen` `[T, T]`: which slots hold an event."""
    width = len(before)
    q = _heads(block, last, 0, 1)[:, 0] / math.sqrt(last.shape[1] // block.attn.heads)  # [T, H, d / H]
    k_old, v_old = _heads(block, shifted, 1, 2).unbind(1)  # [T, H, d / H]
    k_new, v_new = _heads(block, x, 1, 2).unbind(1)  # [S, H, d / H]
    later = removal * width + slot
    logits = torch.einsum("nhe,che->hnc", q, k_old).flatten(1)  # [H, T * T]
    logits = logits.index_copy(1, later, torch.einsum("she,she->hs", q[removal], k_new))
    seen = seen | (torch.arange(width, device=seen.device) == width - 1)  # the query sees itself
    weights = logits.view(-1, width, width).masked_fill(~seen, -math.inf).softmax(-1)  # [H, T, T]
    mixed = (weights * before) @ v_old.transpose(0, 1)  # [H, T, d / H]
    new = weights.flatten(1)[:, later, None] * v_new.transpose(0, 1)  # [H, S, d / H]
    return mixed.index_add(1, removal, new).transpose(0, 1).flatten(1)
