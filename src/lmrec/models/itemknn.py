"""ItemKNN: a sequence-aware item-to-item neighbourhood model, optionally reading item text.

Each of the last `recent` history items votes for the items that followed it (transition counts) and
that occurred near it (co-occurrence within `window` steps, either side) in the training sequences,
weighted by `decay ** age` — the session-kNN family that Ludewig & Jannach (2018) found hard to beat on
short sessions. With `text_weight > 0`, each recent item also votes for the items whose text the
language model places nearest (cosine of the frozen encoder's vectors), so an item nobody has bought yet
scores by what it is. Nothing is trained by gradient: counts are taken once from the training
sequences and the weights are settings, chosen on validation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from lmrec.models.base import ModelConfig, SequentialRecommender, register
from lmrec.text.pooling import DEFAULT_POOLING, DEFAULT_PROMPT, Pooling

_SIZED = ("row_ptr", "cols", "transitions", "cooccurrences", "item_text")  # buffers sized by the data
# Every buffer taken from one catalogue's training data (what never transfers to another catalogue).
STATISTICS = (*_SIZED, "counts")


class VoteConfig(BaseModel):
    """Weights of the neighbourhood votes (all settings; nothing here is learned)."""

    model_config = ConfigDict(extra="forbid")

    recent: int = Field(3, ge=1, description="how many of the most recent history items vote")
    decay: float = Field(0.3, gt=0, le=1, description="weight of a vote from the item `age` steps back: decay**age")
    window: int = Field(3, ge=1, description="co-occurrence counts items at most this many steps apart")
    transition_weight: float = Field(1.0, ge=0, description="weight of log(1 + times b directly followed a)")
    cooccurrence_weight: float = Field(1.0, ge=0, description="weight of log(1 + times a and b were near)")
    text_weight: float = Field(0.0, ge=0, description="weight of the text cosine of a and b; 0 reads no text")
    text_whiten: bool = Field(
        False,
        description="whiten the catalogue's text vectors before the cosine (a decoder LLM's vectors share one "
        "dominant direction that makes every pair look alike)",
    )
    popularity_weight: float = Field(0.0, ge=0, description="weight of log(1 + training events of b)")
    history_weight: float = Field(
        0.0, description="added to items already in the history: negative where people rarely buy twice"
    )


class ItemKNNConfig(ModelConfig, VoteConfig):
    """The votes' weights and the text encoder that the text votes read."""

    encoder: str | None = Field(None, description="text encoder (as lmrec's model.encoder); default all-MiniLM-L6-v2")
    text_max_length: int = Field(64, ge=8, description="token limit per item text")
    text_pooling: Pooling = Field(DEFAULT_POOLING, description="token states → item vector (as lmrec's)")
    text_prompt: str = Field(DEFAULT_PROMPT, description="the prompt of text_pooling=prompt")


@register("itemknn")
class ItemKNN(SequentialRecommender):
    """Scores items by decayed votes of the recent history: transitions, co-occurrences and text."""

    Config = ItemKNNConfig
    trainable = False

    def __init__(self, n_items: int, config: ItemKNNConfig) -> None:
        super().__init__(n_items, config)
        self.cfg = config
        self.uses_item_text = config.text_weight > 0
        # Neighbours of item a are cols[row_ptr[a]:row_ptr[a + 1]] (CSR), with their two counts.
        self.register_buffer("row_ptr", torch.zeros(n_items + 2, dtype=torch.long))
        self.register_buffer("cols", torch.zeros(0, dtype=torch.long))
        self.register_buffer("transitions", torch.zeros(0))
        self.register_buffer("cooccurrences", torch.zeros(0))
        self.register_buffer("counts", torch.zeros(n_items + 1))
        self.register_buffer("item_text", torch.zeros(n_items + 1, 0))

    def set_item_text(self, embeddings: Tensor) -> None:
        """Keep the item vectors L2-normalised `[n_items + 1, dim]` (whitened first if asked), so that a dot
        product is a cosine; row 0 (padding) stays zero."""
        if embeddings.shape[0] != self.n_items + 1:
            raise ValueError(f"item text embeddings need {self.n_items + 1} rows, got {embeddings.shape[0]}")
        vectors = embeddings.float().clone()
        if self.cfg.text_whiten:
            vectors[1:] = whiten(vectors[1:])
        vectors[0] = 0
        self.item_text = F.normalize(vectors, dim=-1)

    def with_items(self, n_items: int, rows: list[int], vectors: Tensor) -> ItemKNN:
        """A copy grown to `n_items` items, `vectors` the text of `rows`: the new items have no counts yet,
        so only their text votes for them."""
        if self.cfg.text_whiten and self.uses_item_text:
            raise ValueError(
                "itemknn with text_whiten=true cannot take new items: the whitening is fitted to the trained "
                "catalogue's text; retrain with the new items instead."
            )
        grown = copy.deepcopy(self)
        extra = n_items - self.n_items
        grown.counts = F.pad(self.counts, (0, extra))
        grown.row_ptr = torch.cat([self.row_ptr, self.row_ptr[-1:].expand(extra)])
        grown.item_text = F.pad(self.item_text, (0, 0, 0, extra))
        if self.uses_item_text:
            grown.item_text[torch.as_tensor(rows)] = F.normalize(vectors.float(), dim=-1)
        grown.n_items = n_items
        return grown

    def fit_statistics(self, sequences: list[Tensor]) -> None:
        """Count transitions and co-occurrences of the training sequences into a sparse neighbour table."""
        n = self.n_items + 1
        seqs = [s.long() for s in sequences if len(s)]
        flat = torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long)
        owner = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor([len(s) for s in seqs], dtype=torch.long))
        self.counts = torch.bincount(flat, minlength=n).float()
        pairs = {"transitions": [], "cooccurrences": []}
        for gap in range(1, self.cfg.window + 1):
            same = owner[:-gap] == owner[gap:]
            first, then = flat[:-gap][same], flat[gap:][same]
            if gap == 1:
                pairs["transitions"].append(first * n + then)
            pairs["cooccurrences"] += [first * n + then, then * n + first]
        keys = {name: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long) for name, parts in pairs.items()}
        union = torch.unique(torch.cat(list(keys.values())))
        for name, values in keys.items():
            setattr(self, name, torch.bincount(torch.searchsorted(union, values), minlength=union.numel()).float())
        self.cols = union % n
        self.row_ptr = F.pad(torch.bincount(union // n, minlength=n).cumsum(0), (1, 0))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Take the sizes of the data-sized buffers from the checkpoint before copying into them, and refuse a
        neighbour table that does not hold together (a checkpoint is untrusted input)."""
        for name in _SIZED:
            if isinstance(state_dict.get(prefix + name), Tensor):
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        problem = self._table_problem()
        if problem:
            error_msgs.append(f"the itemknn neighbour table is inconsistent: {problem}")

    def _table_problem(self) -> str:
        """What is wrong with the neighbour table and item text buffers, or "" when they hold together."""
        n, nnz = self.n_items + 1, self.cols.numel()
        if self.row_ptr.shape != (n + 1,) or self.row_ptr[0] != 0 or self.row_ptr[-1] != nnz:
            return f"row pointers must run from 0 to {nnz} over {n + 1} entries"
        if (
            bool((self.row_ptr.diff() < 0).any())
            or self.transitions.numel() != nnz
            or self.cooccurrences.numel() != nnz
        ):
            return "row pointers must not decrease and every neighbour needs both counts"
        if nnz and not (int(self.cols.min()) >= 0 and int(self.cols.max()) < n):
            return f"neighbour ids must lie in 0..{n - 1}"
        if self.counts.shape != (n,) or self.item_text.dim() != 2 or self.item_text.shape[0] != n:
            return f"item counts and item text need {n} rows"
        return ""

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """Full-ranking scores: decayed neighbourhood votes of the last `recent` items, plus popularity."""
        recent = history[:, -self.cfg.recent :].flip(1)  # column j: the item j steps back (0: none)
        weights = self.cfg.decay ** torch.arange(recent.shape[1], device=history.device, dtype=torch.float32)
        weights = weights * (recent > 0)
        scores = self.cfg.popularity_weight * torch.log1p(self.counts).expand(history.shape[0], -1).clone()
        self._add_counts(scores, recent, weights)
        if self.cfg.text_weight > 0:
            if self.item_text.shape[1] == 0:
                raise TypeError("itemknn with text_weight > 0 needs item text; install it with set_item_text")
            sims = self.item_text[recent] @ self.item_text.T  # [B, recent, n_items + 1]
            scores += self.cfg.text_weight * (weights[..., None] * sims).sum(1)
        if self.cfg.history_weight:
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, history[:, -self.max_len :], True)
            scores += self.cfg.history_weight * seen  # the padding column is masked below
        return self.mask_padding(scores)

    def _add_counts(self, scores: Tensor, recent: Tensor, weights: Tensor) -> None:
        """Add every recent item's weighted count votes to its row of `scores` (a sparse gather)."""
        start = self.row_ptr[recent].flatten()
        sizes = (self.row_ptr[recent + 1].flatten() - start) * (recent.flatten() > 0)
        segment = torch.repeat_interleave(torch.arange(sizes.numel(), device=scores.device), sizes)
        offset = torch.arange(segment.numel(), device=scores.device) - (sizes.cumsum(0) - sizes)[segment]
        entry = start[segment] + offset
        votes = self.cfg.transition_weight * torch.log1p(self.transitions[entry])
        votes = votes + self.cfg.cooccurrence_weight * torch.log1p(self.cooccurrences[entry])
        rows = torch.div(segment, recent.shape[1], rounding_mode="floor")
        scores.index_put_((rows, self.cols[entry]), votes * weights.flatten()[segment], accumulate=True)


def whiten(vectors: Tensor, eps: float = 1e-6) -> Tensor:
    """Centre the rows and decorrelate their dimensions to unit variance (BERT-whitening, Su et al. 2021),
    with the eigenvectors of their covariance; directions of (near) zero variance are dropped."""
    centred = vectors - vectors.mean(0)
    variances, axes = torch.linalg.eigh(torch.cov(centred.T.double()))
    keep = variances > eps * variances.max().clamp(min=eps)
    return (centred.double() @ (axes[:, keep] / variances[keep].sqrt())).float()
