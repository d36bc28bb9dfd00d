"""The lmrec model: a causal Transformer over items represented by what a pretrained language model reads.

Each item's text (title, genres, description) is embedded once by a frozen sentence encoder; a trainable
adapter — parametric whitening followed by a mixture of experts, as in UniSRec (Hou et al., KDD 2022) —
maps it into the sequence model's space, optionally plus a learned ID embedding. The output layer scores
items by the same text-derived table, so an item nobody has touched yet still gets a meaningful score,
and a model trained without IDs (`use_id: false`, the inductive mode) transfers to a new catalogue.

With `neighbourhood_weight > 0` the Transformer's log-probabilities are blended with the votes of an
item-kNN over the same item text and the training sequences' transition counts (`models/itemknn.py`): a
late fusion whose weight is a setting, chosen on validation. The votes never enter the loss, so the
Transformer learns what it learns alone; they carry the short-history, text-neighbour signal that a
neighbourhood model reads best on sparse purchase logs (docs/benchmarks.md, Amazon Industrial).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lmrec.models.base import Batch, SequentialRecommender, register
from lmrec.models.itemknn import STATISTICS, ItemKNN, ItemKNNConfig, VoteConfig
from lmrec.models.sasrec import SASRec, SASRecConfig
from lmrec.text.pooling import DEFAULT_POOLING, DEFAULT_PROMPT, Pooling


class LMRecConfig(SASRecConfig):
    """Hyper-parameters of the text-aware sequence model."""

    text_dim: int = Field(384, ge=1, description="dimension of the item text embeddings")
    experts: int = Field(8, ge=1, description="whitening experts of the mixture-of-experts adapter")
    text_dropout: float = Field(0.1, ge=0, lt=1)
    use_id: bool = Field(True, description="add a learned ID embedding to items seen in training")
    id_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of items trained without their ID embedding in each step (cold start)"
    )
    use_text: bool = Field(
        True, description="read item text; false makes the same model ID-only (SASRec with these settings)"
    )
    encoder: str | None = Field(
        None,
        description="text encoder: a local Hugging Face encoder or decoder-LLM folder, a GGUF file, or smollm2-135m; "
        "default all-MiniLM-L6-v2",
    )
    text_max_length: int = Field(64, ge=8, description="token limit per item text (a prompt's tokens included)")
    text_pooling: Pooling = Field(
        DEFAULT_POOLING,
        description="token states → item vector: the masked mean, a decoder's last token, or a prompt's last token",
    )
    text_prompt: str = Field(DEFAULT_PROMPT, description="the prompt of text_pooling=prompt; {text} is the item text")
    neighbourhood_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the item-kNN votes (model.neighbourhood) added to the Transformer's "
        "log-probabilities when scoring; 0 scores by the Transformer alone",
    )
    neighbourhood: VoteConfig = Field(
        default_factory=VoteConfig, description="the item-kNN votes' settings (as itemknn's), over lmrec's item text"
    )

    @model_validator(mode="after")
    def _reads_something(self) -> LMRecConfig:
        if not (self.use_id or self.use_text):
            raise ValueError("use_id and use_text cannot both be false: the model would know nothing of an item")
        if self.neighbourhood_weight > 0 and self.neighbourhood.text_weight > 0 and not self.use_text:
            raise ValueError("neighbourhood.text_weight > 0 reads item text: it needs use_text=true")
        return self


class MoEAdapter(nn.Module):
    """Parametric whitening experts `(x - b_k) W_k` mixed by a softmax gate over the text embedding."""

    def __init__(self, text_dim: int, hidden: int, experts: int, dropout: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, text_dim))
        self.proj = nn.Parameter(torch.empty(experts, text_dim, hidden))
        nn.init.xavier_uniform_(self.proj.view(-1, hidden))
        self.gate = nn.Linear(text_dim, experts, bias=False)
        nn.init.zeros_(self.gate.weight)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """`[N, text_dim] → [N, hidden]`; (x - b_k) W_k is computed as x W_k - b_k W_k in one matmul."""
        x = self.drop(x)
        experts_, text_dim, hidden = self.proj.shape
        projected = (x @ self.proj.permute(1, 0, 2).reshape(text_dim, experts_ * hidden)).view(-1, experts_, hidden)
        shift = torch.einsum("kt,kth->kh", self.bias, self.proj)
        weights = self.gate(x).softmax(-1)
        return (weights[:, :, None] * (projected - shift)).sum(1)


@register("lmrec")
class LMRec(SASRec):
    """SASRec whose item table is adapter(text embedding) [+ ID embedding for items seen in training]."""

    Config = LMRecConfig
    uses_item_text = True

    def __init__(self, n_items: int, config: LMRecConfig) -> None:
        super().__init__(n_items, config)
        self.register_buffer("text_emb", torch.zeros(n_items + 1, config.text_dim))
        self.register_buffer("has_id", torch.zeros(n_items + 1, dtype=torch.bool))
        self.adapter = MoEAdapter(config.text_dim, config.hidden, config.experts, config.text_dropout)
        self.text_norm = nn.LayerNorm(config.hidden)
        self._table: Tensor | None = None
        self._memo: tuple[tuple, Tensor] | None = None
        self.uses_item_text = config.use_text
        self.neighbourhood: ItemKNN | None = None
        if config.neighbourhood_weight > 0:
            votes = ItemKNNConfig(**config.neighbourhood.model_dump(), max_len=config.max_len)
            self.neighbourhood = ItemKNN(n_items, votes)
        if not config.use_id:
            self.item_emb.weight.requires_grad_(False)
            nn.init.zeros_(self.item_emb.weight)

    def set_item_text(self, embeddings: Tensor) -> None:
        """Install the item text embeddings `[n_items + 1, text_dim]` (row 0, padding, is ignored)."""
        if tuple(embeddings.shape) != tuple(self.text_emb.shape):
            raise ValueError(
                f"item text embeddings must be {tuple(self.text_emb.shape)}, got {tuple(embeddings.shape)}"
            )
        self.text_emb.copy_(embeddings)
        if self.neighbourhood is not None and self.neighbourhood.uses_item_text:
            self.neighbourhood.set_item_text(embeddings)

    def with_items(self, n_items: int, rows: list[int], vectors: Tensor) -> LMRec:
        """A copy grown to `n_items` items (in eval mode), `vectors` the text embeddings of `rows`: new items
        have no ID embedding and no neighbour counts, so they score by their text."""
        grown = copy.deepcopy(self)
        extra = n_items - self.n_items
        text = torch.cat([self.text_emb, self.text_emb.new_zeros(extra, self.text_emb.shape[1])])
        text[torch.as_tensor(rows)] = vectors.to(text.dtype)
        grown.text_emb = text
        grown.has_id = torch.cat([self.has_id, self.has_id.new_zeros(extra)])
        old = self.item_emb.weight.detach()
        grown.item_emb = nn.Embedding(n_items + 1, old.shape[1], padding_idx=0).requires_grad_(False)
        with torch.no_grad():
            grown.item_emb.weight.copy_(torch.cat([old, old.new_zeros(extra, old.shape[1])]))
        if self.neighbourhood is not None:
            grown.neighbourhood = self.neighbourhood.with_items(n_items, rows, vectors)
        grown.n_items = n_items
        return grown.eval()

    def switch_catalogue(self, embeddings: Tensor) -> None:
        """Serve another catalogue (of any size) from its text alone: only for models without ID embeddings."""
        if not self.inductive:
            raise ValueError(
                "only an inductive lmrec model (model.use_id=false, model.neighbourhood_weight=0) can switch catalogues"
            )
        self.n_items = embeddings.shape[0] - 1
        self.text_emb = embeddings.to(self.text_emb)
        self.has_id = torch.zeros(self.n_items + 1, dtype=torch.bool, device=self.text_emb.device)
        self.item_emb = nn.Embedding(self.n_items + 1, self.cfg.hidden, padding_idx=0).requires_grad_(False)
        nn.init.zeros_(self.item_emb.weight)

    def fit_statistics(self, sequences: list[Tensor]) -> None:
        """Give ID embeddings only to items that occur in training; the others rely on their text alone."""
        self.has_id.zero_()
        for seq in sequences:
            self.has_id[seq] = True
        self.has_id[0] = False
        if self.neighbourhood is not None:
            self.neighbourhood.fit_statistics(sequences)

    @staticmethod
    def catalogue_keys() -> tuple[str, ...]:
        """State-dict entries that belong to one catalogue and never transfer to another (the neighbour
        counts are taken afresh from each training set)."""
        return ("text_emb", "has_id", "item_emb.weight", *(f"neighbourhood.{name}" for name in STATISTICS))

    @property
    def inductive(self) -> bool:
        """Without ID embeddings or neighbour counts the model reads items from their text alone: any
        catalogue will do."""
        return not self.cfg.use_id and self.neighbourhood is None

    @property
    def scores_by_table(self) -> bool:
        """Neighbour votes are added to the table's scores, which an inner-product index cannot hold."""
        return self.neighbourhood is None

    def item_table(self) -> Tensor:
        """Representation of every item: `[n_items + 1, hidden]`, row 0 zero.

        While training with `id_dropout`, a fresh random share of items loses its ID embedding at each step
        (as in DropoutNet, Volkovs et al. 2017), so that text alone must place them: the state every item
        not yet interacted with is in at serving time. Without gradients and outside training the table is
        remembered until a tensor it reads is replaced or changed in place (its version counter moves), so
        repeated inference calls (a recommendation per user) do not recompute the adapter over the catalogue.
        """
        if self.training or torch.is_grad_enabled():
            return self._fresh_table()
        key = self._table_key()
        if self._memo is None or self._memo[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                self._memo = (key, self._fresh_table())
        return self._memo[1]

    def _table_key(self) -> tuple:
        """What the item table is computed from: every tensor's identity, storage and version counter."""
        tensors = [self.text_emb, self.has_id, self.item_emb.weight, *self.adapter.parameters()]
        return tuple((id(t), t.data_ptr(), t._version) for t in [*tensors, *self.text_norm.parameters()])

    def _fresh_table(self) -> Tensor:
        """The item table computed now (see `item_table`)."""
        if not self.cfg.use_text:
            table = self.item_emb.weight
        else:
            table = self.text_norm(self.adapter(self.text_emb))
            if self.cfg.use_id:
                keep = self.has_id
                if self.training and self.cfg.id_dropout > 0:
                    keep = keep & (torch.rand(keep.shape, device=keep.device) >= self.cfg.id_dropout)
                table = table + self.item_emb.weight * keep[:, None]
        return table * (torch.arange(table.shape[0], device=table.device) > 0)[:, None]

    def input_embeddings(self, inputs: Tensor) -> Tensor:
        """Text-derived representations of the input items."""
        return self.output_embeddings()[inputs]

    def output_embeddings(self) -> Tensor:
        """The same text-derived table scores the next item (computed once per loss or scoring call)."""
        return self._table if self._table is not None else self.item_table()

    def loss(self, batch: Batch) -> Tensor:
        """The base next-item loss, with the item table computed once for inputs and outputs."""
        with self._shared_table():
            return super().loss(batch)

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """Full-ranking scores, with the item table computed once: the Transformer's logits, or with a
        neighbourhood its log-probabilities plus the weighted neighbour votes."""
        with self._shared_table():
            scores = super().score_all(history, lengths)
        if self.neighbourhood is None:
            return scores
        votes = self.neighbourhood.score_all(history, lengths)
        return self.mask_padding(scores.log_softmax(-1) + self.cfg.neighbourhood_weight * votes)

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """Occlusion per item, with the item table computed once: SASRec's exact fixed-shape path, or with a
        neighbourhood the generic one (every single-event removal rescored through both parts)."""
        with self._shared_table():
            if self.neighbourhood is not None:
                return SequentialRecommender.explain(self, history, lengths, items)
            return super().explain(history, lengths, items)

    @contextmanager
    def _shared_table(self) -> Iterator[None]:
        if self._table is not None:  # already inside a shared-table call
            yield
            return
        self._table = self.item_table()
        try:
            yield
        finally:
            self._table = None
