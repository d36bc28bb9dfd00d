"""The one model interface: every recommender plugs into the trainer, evaluator and service through it.

Conventions shared by every model:
- Item id 0 is padding; real items are 1..n_items. Score tensors have `n_items + 1` columns indexed by
  item id, and column 0 is always -inf so that padding is never ranked.
- A history is a right-aligned (left-padded) `[B, L]` int64 tensor: the most recent item is in the last
  column, zeros fill the front; `lengths[b]` counts the real items of row b.
- A training `Batch` holds windows of `max_len + 1` consecutive events of one user, right-aligned, and a
  `fresh` mask marking the events that are prediction targets for the first time in this epoch (windows
  of a long sequence overlap at its start, so every event is a target exactly once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from lmrec.errors import ConfigError

NEG_INF = float("-inf")
OCCLUSION_ROWS = 1024  # occluded histories per scoring call: a served user's whole window takes one call
SCORE_CELLS = 1 << 24  # score cells (rows x catalogue) per occlusion call, bounding memory on large catalogues


@dataclass
class Batch:
    """A training batch of right-aligned event windows."""

    items: Tensor  # [B, T+1] int64, 0 = padding
    fresh: Tensor  # [B, T+1] bool, True where the event is a new prediction target
    users: Tensor  # [B] int64 user_idx

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to `device`."""
        return Batch(self.items.to(device), self.fresh.to(device), self.users.to(device))

    @property
    def next_item(self) -> tuple[Tensor, Tensor]:
        """(inputs [B, T], targets [B, T]) for next-item prediction; target 0 means "no target here"."""
        inputs = self.items[:, :-1]
        targets = self.items[:, 1:] * self.fresh[:, 1:]
        return inputs, targets


@dataclass
class ItemBias:
    """Additive logit `weight` on the items listed for each row, kept sparse so no `[N, n_items+1]` exists."""

    weight: Tensor  # [] the logit added to every listed item
    items: Tensor  # [N, L] int64 item ids per row; 0 = no item, repeats count once

    def listed(self, rows: slice, n_cols: int) -> Tensor:
        """`[rows, n_cols]` float: 1 where the item is listed for the row; padding column 0 is never listed."""
        items = self.items[rows]
        listed = self.weight.new_zeros(items.shape[0], n_cols).scatter_(1, items, 1.0)
        listed[:, 0] = 0.0
        return listed

    def at(self, cols: Tensor) -> Tensor:
        """The additive logits `[N, K]` at item ids `cols` `[N, K]` (all ≥ 1)."""
        listed = (self.items[:, None, :] == cols[:, :, None]).any(-1)
        return self.weight * listed


Objective = Callable[..., Tensor]
"""A training objective: (hidden [N, d], targets [N] item ids > 0, item table [n_items+1, d],
extra `ItemBias` over the N rows or None) → scalar loss.

Objectives are built by `lmrec.training.losses` and injected by the trainer as `model.objective`.
"""


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(50, ge=1)


class NextItemConfig(ModelConfig):
    """Settings shared by next-item models that score hidden states against an item table."""

    seen_bias: bool = Field(
        False,
        description="learn one additive score for items already in the history: negative where people "
        "rarely consume an item twice (ratings), positive where they do (music, groceries)",
    )


def without_event(history: Tensor, cols: Tensor) -> Tensor:
    """Right-aligned histories `[N, L]` with event `cols[n]` of row n removed: older events move up one slot."""
    slots = torch.arange(history.shape[1], device=history.device)
    source = slots[None, :] - (slots[None, :] <= cols[:, None]).long()
    return history.gather(1, source.clamp(min=0)) * (source >= 0)


def seen_items(inputs: Tensor) -> Tensor:
    """`[B, T, T]` item ids seen by each position: row (b, t) is inputs[b, :t+1], zeros after slot t."""
    length = inputs.shape[1]
    upto = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
    return inputs[:, None, :] * upto


class SequentialRecommender(nn.Module):
    """Base class of all models. Subclasses implement `score_all` and, when trainable, `loss`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True
    uses_item_text: bool = False  # reads item text; a class default that an instance may switch off
    explain_method: ClassVar[str] = "occlusion"
    # State entries whose rows are items (row i = item id i; rows past n_items, such as a [MASK] token,
    # follow): a warm start onto a grown catalogue copies them row by row, matched by original item id.
    item_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.config = config
        self.max_len = config.max_len
        self.objective: Objective | None = None
        if getattr(config, "seen_bias", False):
            self.seen_weight = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_params(cls, n_items: int, params: dict[str, Any]) -> SequentialRecommender:
        """Build from a plain dict, naming any unknown key or bad value and the allowed ones."""
        try:
            config = cls.Config(**params)
        except ValidationError as exc:
            allowed = ", ".join(sorted(cls.Config.model_fields))
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            if not key:  # a rule between several settings, not one bad value
                raise ConfigError(
                    f"invalid model settings for {cls.name}: {first['msg'].removeprefix('Value error, ')}."
                ) from None
            raise ConfigError(
                f"invalid setting model.{key} for {cls.name}: {first['msg']}; allowed keys: {allowed}."
            ) from None
        return cls(n_items, config)

    # -- next-item models (SASRec, GRU4Rec, lmrec) implement `hidden` and `output_embeddings` --------

    def hidden(self, inputs: Tensor) -> Tensor:
        """Hidden states `[B, T, d]` of right-aligned inputs `[B, T]`; position t summarises inputs[:, :t+1]."""
        raise TypeError(f"{type(self).__name__} has no sequence hidden states")

    def output_embeddings(self) -> Tensor:
        """The item table `[n_items + 1, d]` that hidden states are scored against."""
        raise TypeError(f"{type(self).__name__} has no output item table")

    @property
    def scores_by_table(self) -> bool:
        """Whether `score_all` is the last hidden state · `output_embeddings()` (plus the seen bias): what an
        inner-product index and an ONNX export of the table rely on."""
        return type(self).hidden is not SequentialRecommender.hidden

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss over every fresh target of the batch, using the injected objective."""
        if self.objective is None:
            raise TypeError("no training objective set; the trainer injects one from lmrec.training.losses")
        inputs, targets = batch.next_item
        hidden = self.hidden(inputs)
        keep = targets > 0
        extra = None
        if hasattr(self, "seen_weight"):
            extra = ItemBias(self.seen_weight, seen_items(inputs)[keep])
        return self.objective(hidden[keep], targets[keep], self.output_embeddings(), extra)

    def fit_statistics(self, sequences: list[Tensor]) -> None:
        """Hook for statistics computed once from the training sequences before any epoch (e.g. counts)."""

    @property
    def inductive(self) -> bool:
        """Whether the model holds nothing specific to its catalogue but `catalogue_keys`, so that it can
        score any catalogue whose items have text (an lmrec model without ID embeddings)."""
        return False

    @staticmethod
    def catalogue_keys() -> tuple[str, ...]:
        """State-dict entries that belong to one catalogue and never transfer to another."""
        return ()

    def set_item_text(self, embeddings: Tensor) -> None:
        """Install item text embeddings `[n_items + 1, dim]`; only models with `uses_item_text` take them."""
        raise TypeError(f"{type(self).__name__} does not use item text")

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """Scores of every item for the next step: `[B, n_items + 1]`, column 0 = -inf."""
        window = history[:, -self.max_len :]
        scores = self.hidden(window)[:, -1] @ self.output_embeddings().T
        if hasattr(self, "seen_weight"):
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, window, True)
            scores = scores + self.seen_weight * seen
        return self.mask_padding(scores)

    def score(self, history: Tensor, lengths: Tensor, candidates: Tensor) -> Tensor:
        """Scores `[B, C]` of the given candidate item ids `[B, C]`."""
        return self.score_all(history, lengths).gather(1, candidates)

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        """Weight `[B, K, L]` of each history position for recommending each of `items` `[B, K]`: occlusion.

        Weight (b, k, j) is the score of items[b, k] after history[b] minus its score after history[b] without
        event j (older events move up one slot), so each item is explained by the past events that raise its
        own score; padding gets 0. Every single-event removal of every row is scored in one batch (chunked
        to bound memory), not one model call per position.
        """
        weights = torch.zeros(*items.shape, history.shape[1], device=history.device)
        rows, cols = (history > 0).nonzero(as_tuple=True)
        if not len(rows):
            return weights
        with torch.no_grad():
            full = self.score(history, lengths, items)
            step = max(1, min(OCCLUSION_ROWS, SCORE_CELLS // (self.n_items + 1)))
            for start in range(0, len(rows), step):
                row, col = rows[start : start + step], cols[start : start + step]
                dropped = self.score(without_event(history[row], col), lengths[row] - 1, items[row])
                weights[row, :, col] = full[row] - dropped
        return weights

    @staticmethod
    def mask_padding(scores: Tensor) -> Tensor:
        """Set the padding column to -inf (in place) and return the scores."""
        scores[:, 0] = NEG_INF
        return scores


_REGISTRY: dict[str, type[SequentialRecommender]] = {}


def register(name: str) -> Callable[[type[SequentialRecommender]], type[SequentialRecommender]]:
    """Class decorator that makes a model buildable by name."""

    def wrap(cls: type[SequentialRecommender]) -> type[SequentialRecommender]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def model_names() -> list[str]:
    """Names of all registered models."""
    _import_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[SequentialRecommender]:
    """The model class registered as `name`; a clear error lists the known names otherwise."""
    _import_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def build_model(name: str, n_items: int, params: dict[str, Any]) -> SequentialRecommender:
    """Build a registered model from its parameter dict (validated by the model's own config)."""
    return model_class(name).from_params(n_items, params)  # type: ignore[attr-defined]


def _import_all() -> None:
    import lmrec.models  # noqa: F401  (registers the built-in models)
