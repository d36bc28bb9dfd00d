"""Behaviour classification: labelled examples from a prepared log, cross-encoder training, evaluation,
prediction and re-ranking.

Every event of the prepared dataset is an example: train = split 0, valid = split 1 (early stopping and
the bias L2 strength), test = split 2. With `sampled` labels each logged event is a positive and gets
`negatives` items the user never interacted with, drawn uniformly at the same moment. The history of an
example is the user's events with strictly earlier timestamps (events at the same second are left out),
most recent first, each rendered as its item text and the label-relevant value known at that time
("Toy Story (1995) | Animation Children's Comedy — rated 5, liked").

Training has two stages (`train_classifier`):
1. the bias terms are an L2-regularised logistic regression on a global bias, item biases, optional user
   biases (`user_bias`, off by default: fitted, they absorbed the leniency signal that the features must
   carry for unseen users; ML-100K validation AUC 0.777 with them, 0.787 without) and three features of
   the user's strict past, defined for users the training log never saw (most test users of a temporal
   split): the past label rate (share of positives among all their strictly
   earlier events, shrunk towards the training rate: an online user bias), the past residual (how their
   labels departed from those items' training rates: leniency net of what they chose), and the text
   affinity (those departures weighted by how much each past item's text resembles the candidate's,
   max(cos, 0)² of the frozen encoder's embeddings over the last 50 events: "liked things like this").
   Fitted by full-batch L-BFGS on all training examples (or only the subsample,
   `bias_examples="subsample"`), the L2 strength chosen by validation log-loss. The affinity's window (50)
   and power (2) were chosen on ML-100K's validation events (rating >= 4) among 20/50/200 and 1/2/4/8/16;
2. with the biases frozen, the cross-encoder (LoRA adapters or every weight, plus its head) learns the
   residual with binary cross-entropy on a seeded subsample of the training examples, under an epoch and
   time budget, keeping the state of lowest validation log-loss. The untrained state is the bias model
   itself, so an encoder that never helps on validation is not kept. With `user_bias` on, each example's
   user bias is replaced by the fallback with probability `user_bias_dropout` (default 1: always), so that the
   encoder learns to read a user's taste from the history text as it must for users without training
   events; the user bias of known users is added at prediction. On ML-100K's validation events 1.0 beat
   0.5 and 0.0 (log-loss after 1,000 examples: 0.621 against 0.631 without the past rate; 0.5788 against
   0.5808 with it).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from lmrec import __version__
from lmrec.atomic import atomic_write, atomic_write_json, atomic_write_text
from lmrec.config import load_yaml
from lmrec.data.dataset import INTERACTIONS, TEST, TRAIN, VALID, PreparedDataset
from lmrec.errors import ConfigError, DataError, RunError
from lmrec.evaluate.metrics import classification_metrics, log_loss, roc_auc
from lmrec.evaluate.stats import Interval
from lmrec.models.cross_encoder import (
    HISTORY_FEATURES,
    HISTORY_JOIN,
    RATE_PSEUDO_COUNT,
    CrossEncoder,
    pair_token_lengths,
    tokenize_pairs,
)
from lmrec.registry.run import LOCK_NAME, RunDir, load_checkpoint

log = logging.getLogger(__name__)

MODEL_NAME = "cross_encoder"
NO_HISTORY = "no earlier events"
BIAS_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}
METRICS = ("accuracy", "precision", "recall", "f1", "auc", "logloss")
# Independent random streams, so that e.g. the test subsample does not depend on the training budget.
STREAM_NEGATIVES, STREAM_TRAIN, STREAM_VALID, STREAM_TEST, STREAM_TORCH = 1, 2, 3, 4, 5
AFFINITY_CHUNK = 1024  # candidates per block when comparing item texts (bounds memory at W x dim floats each)

# -- label specifications ------------------------------------------------------------------------------

_COMPARISON = re.compile(r"^([A-Za-z_][\w]*)\s*(>=|<=|==|>|<|=)\s*(.+)$")
_OPERATORS = {
    ">=": np.greater_equal,
    ">": np.greater,
    "<=": np.less_equal,
    "<": np.less,
    "==": np.equal,
}
_TYPE_NAMES = ("type", "event_type")
_VALUE_NAMES = ("value", "rating")
_VERBS = {"rating": "rated"}
_LABEL_HELP = (
    "use a comparison on the value column such as 'rating>=4', an event type such as 'type=purchase', or 'sampled'"
)


@dataclass(frozen=True)
class LabelSpec:
    """What makes an event a positive example: a value comparison, an event type, or being logged at all."""

    text: str
    kind: Literal["value", "type", "sampled"]
    column: str = ""
    op: str = ""
    threshold: float = 0.0
    event_type: str = ""

    def note(self, value: float, event_type: str | None, positive: bool, words: tuple[str, str]) -> str:
        """How a history event shows its label-relevant value: "rated 5, liked", "purchase", or "" for none.

        A value is followed by the word of its own label (`words` = positive, negative word): a frozen
        sentence encoder separates "liked" from "disliked" far better than "5" from "2".
        """
        if self.kind == "value" and not math.isnan(value):
            return f"{_VERBS.get(self.column, self.column)} {value:g}, {words[0] if positive else words[1]}"
        if self.kind == "type" and event_type:
            return event_type
        return ""


def parse_label(text: str) -> LabelSpec:
    """Parse `rating>=4` (>=, >, <=, <, == on the value column), `type=purchase` or `sampled`, strictly."""
    spec = text.strip()
    if spec == "sampled":
        return LabelSpec(text=spec, kind="sampled")
    match = _COMPARISON.match(spec)
    if not match:
        raise ConfigError(f"label {text!r} is not understood; {_LABEL_HELP}.")
    column, op, operand = match.group(1), match.group(2), match.group(3).strip()
    if column in _TYPE_NAMES:
        if op not in ("=", "==") or not re.fullmatch(r"[^\s=<>]+", operand):
            raise ConfigError(f"label {text!r} is not understood; event types are matched as 'type=purchase'.")
        return LabelSpec(text=spec, kind="type", column="event_type", op="==", event_type=operand)
    if op == "=":
        raise ConfigError(f"label {text!r} is not understood; compare values with '==', as in '{column}=={operand}'.")
    try:
        threshold = float(operand)
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise ConfigError(f"label {text!r} compares {column!r} with {operand!r}, which is not a finite number.")
    return LabelSpec(text=spec, kind="value", column=column, op=op, threshold=threshold)


# -- the event log -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventLog:
    """A prepared dataset with its optional `value` and `event_type` columns and each event's strict past.

    `history_end[r]` is the row where event r's history ends: the user's events before it are rows
    `[dataset.offsets[user[r]], history_end[r])`, all with strictly earlier timestamps.
    """

    dataset: PreparedDataset
    users: np.ndarray
    history_end: np.ndarray
    values: np.ndarray | None
    types: np.ndarray | None

    @property
    def value_name(self) -> str | None:
        """The value column's name in the source (e.g. "rating"), when the dataset has one."""
        return self.dataset.manifest.get("columns", {}).get("value") if self.values is not None else None


def strict_history_end(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """For each event, the first row of its user's block with the same timestamp (rows grouped by user, sorted by time).

    Events tied at one timestamp share that row, so none of them is in another's history.
    """
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    same_user = users[1:] == users[:-1]
    if (same_user & (np.diff(timestamps) < 0)).any():
        raise DataError(
            "the events of a user are not in time order; prepare the dataset again with `lmrec data prepare`."
        )
    new_run = np.concatenate([[True], ~same_user | (timestamps[1:] != timestamps[:-1])])
    run_starts = np.flatnonzero(new_run)
    return run_starts[np.cumsum(new_run) - 1].astype(np.int64)


def load_events(dataset: PreparedDataset) -> EventLog:
    """The dataset's events with their optional value and event-type columns (read with pyarrow)."""
    path = dataset.path / INTERACTIONS
    names = set(pq.read_schema(path).names)
    columns = [name for name in ("value", "event_type") if name in names]
    table = pq.read_table(path, columns=columns) if columns else None
    values = table.column("value").to_numpy(zero_copy_only=False).astype(np.float64) if "value" in columns else None
    types = np.asarray(table.column("event_type").to_pylist(), dtype=object) if "event_type" in columns else None
    users = np.repeat(np.arange(dataset.n_users, dtype=np.int64), dataset.lengths)
    return EventLog(dataset, users, strict_history_end(users, dataset.timestamps), values, types)


def check_label(spec: LabelSpec, events: EventLog) -> None:
    """Refuse a label the dataset cannot provide, in one sentence."""
    if spec.kind == "value":
        if events.values is None:
            raise DataError(
                f"label {spec.text!r} needs a value column, but {events.dataset.path} has none; "
                "prepare it with --value-col or use 'sampled'."
            )
        names = {*_VALUE_NAMES, events.value_name}
        if spec.column not in names:
            raise ConfigError(
                f"label {spec.text!r} compares {spec.column!r}, which is not this dataset's value column "
                f"({events.value_name!r}); write it as '{events.value_name}{spec.op}{spec.threshold:g}'."
            )
    if spec.kind == "type" and events.types is None:
        raise DataError(
            f"label {spec.text!r} needs an event_type column, but {events.dataset.path} has none; "
            "prepare it with --type-col or use 'sampled'."
        )


def event_labels(spec: LabelSpec, events: EventLog) -> np.ndarray:
    """0/1 label of every logged event under a value or event-type spec (1 for every event when sampled)."""
    check_label(spec, events)
    if spec.kind == "value":
        return _OPERATORS[spec.op](events.values, spec.threshold).astype(np.int8)
    if spec.kind == "type":
        return (events.types == spec.event_type).astype(np.int8)
    return np.ones(len(events.users), dtype=np.int8)


def event_notes(spec: LabelSpec, events: EventLog, words: tuple[str, str]) -> np.ndarray:
    """The history note of every event ("rated 5, liked", "purchase", or "")."""
    n = len(events.users)
    values = events.values if events.values is not None else np.full(n, np.nan)
    types = events.types if events.types is not None else np.full(n, None, dtype=object)
    labels = event_labels(spec, events)
    rows = zip(values.tolist(), types.tolist(), labels.tolist(), strict=True)
    return np.asarray([spec.note(v, t, bool(y), words) for v, t, y in rows], dtype=object)


# -- examples ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    """Labelled examples: candidate `item` for `user` with `label` and `split`; the history ends at event row `end`."""

    user: np.ndarray
    item: np.ndarray
    end: np.ndarray
    label: np.ndarray
    split: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def subset(self, rows: np.ndarray) -> Examples:
        """The examples at `rows`."""
        return Examples(self.user[rows], self.item[rows], self.end[rows], self.label[rows], self.split[rows])

    def of_split(self, code: int) -> Examples:
        """The examples of one split code."""
        return self.subset(np.flatnonzero(self.split == code))

    def sample(self, limit: int | None, rng: np.random.Generator) -> Examples:
        """At most `limit` examples drawn without replacement (kept in their original order); all when None."""
        if limit is None or limit >= len(self):
            return self
        return self.subset(np.sort(rng.choice(len(self), size=limit, replace=False)))


def sample_unseen(
    events: EventLog, users: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """One item per entry of `users` that the user never interacted with (rejection sampling), drawn
    uniformly or, with `weights` ([n_items + 1], row 0 zero), in proportion to them."""
    data = events.dataset
    n_cols = data.n_items + 1
    seen = np.unique(events.users * n_cols + data.items)
    drawable = np.ones(n_cols, dtype=bool) if weights is None else weights > 0
    drawable[0] = False
    seen_drawable = np.bincount(seen // n_cols, weights=drawable[seen % n_cols], minlength=data.n_users)
    if (seen_drawable >= drawable.sum()).any():
        raise DataError(
            "a user has interacted with every item that can be drawn, so no unclicked negatives can be sampled "
            "for them; use uniform negatives or leave that user out."
        )

    probabilities = None if weights is None else weights / weights.sum()

    def draw(n: int) -> np.ndarray:
        if probabilities is None:
            return rng.integers(1, n_cols, size=n)
        return rng.choice(n_cols, size=n, p=probabilities)

    items = draw(len(users))
    while True:
        clash = np.isin(users * n_cols + items, seen)
        if not clash.any():
            return items
        items[clash] = draw(int(clash.sum()))


def negative_weights(events: EventLog, sampling: str) -> np.ndarray | None:
    """Item weights for drawing negatives: None (uniform), or each item's number of training events
    ("popularity": negatives as hard as what a popularity-aware first stage proposes)."""
    if sampling == "uniform":
        return None
    data = events.dataset
    return np.bincount(data.items[data.split == TRAIN], minlength=data.n_items + 1).astype(np.float64)


def build_examples(
    events: EventLog, spec: LabelSpec, negatives: int = 1, seed: int = 0, sampling: str = "uniform"
) -> Examples:
    """Every logged event as an example (plus `negatives` sampled negatives per event for `sampled` labels,
    drawn uniformly or by training popularity, see `negative_weights`).

    Events without a value cannot be labelled by a value comparison: they are left out as examples
    (counted in a warning) but still appear in later histories.
    """
    data = events.dataset
    labels = event_labels(spec, events)
    examples = Examples(events.users, data.items, events.history_end, labels, data.split)
    if spec.kind == "value":
        missing = np.isnan(events.values)
        if missing.any():
            log.warning("%d of %d events have no value and are not examples of %r", missing.sum(), len(missing), spec)
            examples = examples.subset(np.flatnonzero(~missing))
    if spec.kind != "sampled":
        return examples
    rng = np.random.default_rng((seed, STREAM_NEGATIVES))
    users = np.repeat(events.users, negatives)
    negative = Examples(
        users,
        sample_unseen(events, users, rng, negative_weights(events, sampling)),
        np.repeat(events.history_end, negatives),
        np.zeros(len(users), dtype=np.int8),
        np.repeat(data.split, negatives),
    )
    return Examples(*(np.concatenate([a, b]) for a, b in zip(_fields(examples), _fields(negative), strict=True)))


def _fields(examples: Examples) -> tuple[np.ndarray, ...]:
    return examples.user, examples.item, examples.end, examples.label, examples.split


# -- configuration -------------------------------------------------------------------------------------


class ClassifierConfig(BaseModel):
    """Everything a behaviour-classifier run needs besides the data; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    label: str
    mode: Literal["lora", "full"] = "lora"
    encoder: str | None = Field(None, description="local Hugging Face encoder folder; None: all-MiniLM-L6-v2")
    max_length: int = Field(128, ge=8, description="token budget of one (history, candidate) pair")
    history: int = Field(10, ge=0, description="most recent earlier events shown per example")
    negatives: int = Field(1, ge=1, description="sampled negatives per logged event (label 'sampled')")
    negative_sampling: Literal["uniform", "popularity"] = Field(
        "uniform", description="how negatives are drawn: uniformly, or in proportion to training events"
    )
    max_train_examples: int | None = Field(4000, ge=1, description="seeded subsample for the cross-encoder")
    max_valid_examples: int = Field(1000, ge=0, description="seeded validation subsample; 0: no early stopping")
    max_test_examples: int | None = Field(None, ge=1, description="seeded test subsample; None: all")
    bias_examples: Literal["all", "subsample"] = "all"
    past_rate: bool = Field(True, description="add the user's past label rate to the bias terms")
    user_bias: bool = Field(
        False, description="learn a bias per training user (off: the history features stand in for every user)"
    )
    past_residual: bool = Field(
        True, description="add how the user's past labels departed from those items' training rates"
    )
    text_affinity: bool = Field(
        True, description="add that departure averaged over past items weighted by text similarity to the candidate"
    )
    affinity_window: int = Field(50, ge=1, description="most recent earlier events the text affinity reads")
    affinity_power: float = Field(2.0, gt=0, description="similarity weight max(cos, 0) ** power")
    bias_l2: float | None = Field(None, ge=0, description="None: chosen on validation log-loss")
    epochs: int = Field(1, ge=1)
    max_seconds: float | None = Field(
        None, gt=0, description="time budget of the cross-encoder's training steps; test scoring comes after it"
    )
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0, description="encoder learning rate; None: 1e-3 for lora, 5e-5 for full")
    head_lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the planned steps spent warming up")
    eval_every: int = Field(100, ge=1, description="steps between validation checks")
    user_bias_dropout: float = Field(
        1.0, ge=0, le=1, description="share of stage-2 examples without user bias (with user_bias on)"
    )
    head_dropout: float = Field(0.1, ge=0, lt=1)
    label_words: tuple[str, str] = Field(
        ("liked", "disliked"), description="how history events show their own label (positive, negative)"
    )
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    seed: int = 0

    @property
    def encoder_lr(self) -> float:
        """The encoder's learning rate, defaulting by mode."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]


def make_config(**settings: Any) -> ClassifierConfig:
    """A validated config; a bad setting is one ConfigError naming the key."""
    try:
        return ClassifierConfig(**settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid classifier setting {key}: {first['msg']}.") from None


# -- the classifier ------------------------------------------------------------------------------------


class Classifier:
    """A cross-encoder bound to its dataset: it renders examples into text pairs and predicts probabilities."""

    def __init__(
        self, model: CrossEncoder, tokenizer, config: ClassifierConfig, spec: LabelSpec, events: EventLog
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.spec = spec
        self.events = events
        data = events.dataset
        self.item_texts = [None, *(data.item_text[i] or str(data.item_ids[i]) for i in range(1, data.n_items + 1))]
        self.notes = event_notes(spec, events, config.label_words)
        labels = event_labels(spec, events).astype(np.float64)
        labelled = np.ones(len(labels)) if events.values is None or spec.kind != "value" else ~np.isnan(events.values)
        self.labels = labels * labelled
        self.labelled = labelled.astype(np.float64)
        self._label_sums = np.concatenate([[0.0], np.cumsum(self.labels)])
        self._labelled_sums = np.concatenate([[0.0], np.cumsum(self.labelled)])
        self.item_vectors = item_vectors(config, data) if config.text_affinity else None
        self.refresh_residuals()

    @property
    def dataset(self) -> PreparedDataset:
        """The dataset whose ids, texts and histories the classifier uses."""
        return self.events.dataset

    def rate(self, positives: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Centred past label rates from positive and labelled counts; zeros when `past_rate` is off and for
        sampled labels (every logged event is a positive, so the rate would only measure activity)."""
        if not self.config.past_rate or self.spec.kind == "sampled":
            return np.zeros(len(positives))
        with torch.no_grad():
            return self.model.past_rate(torch.as_tensor(positives), torch.as_tensor(counts)).numpy()

    def past_rate(self, examples: Examples) -> np.ndarray:
        """Centred label rate of each example's whole strict past (all the user's events before `end`)."""
        start = self.dataset.offsets[examples.user]
        positives = self._label_sums[examples.end] - self._label_sums[start]
        return self.rate(positives, self._labelled_sums[examples.end] - self._labelled_sums[start])

    def refresh_residuals(self) -> None:
        """Each event's label minus its item's training rate (0 for unlabelled events) and their running sums;
        called again whenever stage 1 sets the item rates."""
        rates = self.model.item_rate.numpy()[self.dataset.items]
        self.residuals = (self.labels - rates) * self.labelled
        self._residual_sums = np.concatenate([[0.0], np.cumsum(self.residuals)])

    def residual(self, residual_sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Mean past residual shrunk towards 0 with RATE_PSEUDO_COUNT events; zeros when off or for sampled labels."""
        if not self.config.past_residual or self.spec.kind == "sampled":
            return np.zeros(len(counts))
        return residual_sums / (counts + RATE_PSEUDO_COUNT)

    def affinity(self, items: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Text affinity of candidate `items` [N] with history event rows [N, W] (-1 pads): the residuals of
        the history events weighted by max(cos, 0) ** power of their item texts to the candidate's, divided
        by (total weight + 1) so that a thin history says little. Zeros when the feature is off."""
        out = np.zeros(len(items))
        if self.item_vectors is None or not len(items):
            return out
        present = rows >= 0
        safe = np.where(present, rows, 0)
        history = self.dataset.items[safe]
        for start in range(0, len(items), AFFINITY_CHUNK):
            part = slice(start, start + AFFINITY_CHUNK)
            cos = np.einsum("nd,nwd->nw", self.item_vectors[items[part]], self.item_vectors[history[part]])
            weights = np.maximum(cos, 0.0) ** self.config.affinity_power * present[part] * self.labelled[safe[part]]
            out[part] = (weights * self.residuals[safe[part]]).sum(axis=1) / (weights.sum(axis=1) + 1.0)
        return out

    def features(self, examples: Examples) -> np.ndarray:
        """[N, len(HISTORY_FEATURES)] history features of examples, all from the user's strict past."""
        start = self.dataset.offsets[examples.user]
        counts = self._labelled_sums[examples.end] - self._labelled_sums[start]
        residual = self.residual(self._residual_sums[examples.end] - self._residual_sums[start], counts)
        window = examples.end[:, None] + np.arange(-self.config.affinity_window, 0)[None, :]
        rows = np.where(window >= start[:, None], window, -1)
        return np.column_stack([self.past_rate(examples), residual, self.affinity(examples.item, rows)])

    def row_features(self, items: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """History features of candidate `items` [N] after given right-aligned event rows [N, L] (-1 pads):
        rate and residual over all L rows, affinity over the last `affinity_window`."""
        present = rows >= 0
        safe = np.where(present, rows, 0)
        counts = np.where(present, self.labelled[safe], 0.0).sum(axis=1)
        rate = self.rate(np.where(present, self.labels[safe], 0.0).sum(axis=1), counts)
        residual = self.residual(np.where(present, self.residuals[safe], 0.0).sum(axis=1), counts)
        affinity = self.affinity(items, rows[:, -self.config.affinity_window :])
        return np.column_stack([rate, residual, affinity])

    def history_text(self, items: Sequence[int], notes: Sequence[str]) -> str:
        """History events (most recent first) as one text: "item text — note ; item text — note ; …"."""
        parts = [
            f"{self.item_texts[i]} — {n}" if n else str(self.item_texts[i]) for i, n in zip(items, notes, strict=True)
        ]
        return HISTORY_JOIN.join(parts) if parts else NO_HISTORY

    def rows_text(self, rows: np.ndarray) -> str:
        """History text of event rows given most recent first."""
        return self.history_text(self.dataset.items[rows].tolist(), self.notes[rows].tolist())

    def example_texts(self, examples: Examples) -> tuple[list[str], list[str]]:
        """(history texts, candidate texts) of examples: the last `history` events before each `end`."""
        starts = self.dataset.offsets[examples.user]
        first = np.maximum(starts, examples.end - self.config.history)
        histories = [
            self.rows_text(np.arange(e - 1, f - 1, -1))
            for f, e in zip(first.tolist(), examples.end.tolist(), strict=True)
        ]
        return histories, [self.item_texts[i] for i in examples.item.tolist()]

    def predict_texts(
        self,
        histories: list[str],
        candidates: list[str],
        users: np.ndarray,
        items: np.ndarray,
        features: np.ndarray,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, truncated flags) of text pairs with each user, item and history-feature row, batched
        by token length; the model's train/eval mode is restored."""
        lengths = pair_token_lengths(self.tokenizer, histories, candidates)
        order = np.argsort(np.minimum(lengths, self.config.max_length), kind="stable")
        logits = np.empty(len(histories), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        size = self.config.eval_batch_size
        with (
            torch.inference_mode(),
            tqdm(total=len(histories), desc="predicting", unit="ex", disable=not progress) as bar,
        ):
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                tokens = tokenize_pairs(
                    self.tokenizer, [histories[i] for i in rows], [candidates[i] for i in rows], self.config.max_length
                )
                out = self.model(
                    tokens, torch.as_tensor(users[rows]), torch.as_tensor(items[rows]), torch.as_tensor(features[rows])
                )
                logits[rows] = out.double().numpy()
                bar.update(len(rows))
        self.model.train(was_training)
        return torch.sigmoid(torch.from_numpy(logits)).numpy(), lengths > self.config.max_length

    def predict(self, examples: Examples, progress: bool = False) -> tuple[np.ndarray, int]:
        """(probabilities, number of truncated examples) of examples."""
        histories, candidates = self.example_texts(examples)
        features = self.features(examples)
        probs, truncated = self.predict_texts(histories, candidates, examples.user, examples.item, features, progress)
        report_truncation(int(truncated.sum()), len(examples), self.config.max_length)
        return probs, int(truncated.sum())

    def bias_probabilities(self, examples: Examples) -> np.ndarray:
        """Probabilities of the bias terms alone (the logistic-regression baseline)."""
        features = torch.as_tensor(self.features(examples))
        with torch.inference_mode():
            logits = self.model.bias_logit(torch.as_tensor(examples.user), torch.as_tensor(examples.item), features)
        return torch.sigmoid(logits.double()).numpy()


def report_truncation(truncated: int, total: int, max_length: int) -> None:
    """Log how many examples did not fit the token budget (a warning when any did not)."""
    if truncated:
        log.warning(
            "%d of %d examples were longer than %d tokens and were cut, oldest history events first",
            truncated,
            total,
            max_length,
        )
    else:
        log.info("%d examples, none longer than %d tokens", total, max_length)


def item_vectors(config: ClassifierConfig, dataset: PreparedDataset) -> np.ndarray:
    """[n_items + 1, dim] normalised text embeddings of the catalogue by the classifier's base encoder
    (frozen, disk-cached), which the text-affinity feature compares."""
    from lmrec.text.items import encode_items

    table, _ = encode_items(dataset.item_text, list(dataset.item_ids), model=config.encoder)
    return table.numpy()


def shrunk_rates(examples: Examples, n_items: int, prior: float) -> np.ndarray:
    """[n_items + 1] label rate of each item over `examples`, shrunk towards `prior` with RATE_PSEUDO_COUNT
    pseudo-examples (the prior for items without examples)."""
    counts = np.bincount(examples.item, minlength=n_items + 1)
    positives = np.bincount(examples.item, weights=examples.label.astype(np.float64), minlength=n_items + 1)
    return (positives + RATE_PSEUDO_COUNT * prior) / (counts + RATE_PSEUDO_COUNT)


def build_classifier(config: ClassifierConfig, events: EventLog) -> Classifier:
    """A fresh classifier: the encoder loaded from its folder, wrapped with LoRA adapters in `lora` mode."""
    from lmrec.text.encoder import check_max_length, load_config, load_model, load_tokenizer, resolve_model_path
    from lmrec.text.lora import wrap_lora

    spec = parse_label(config.label)
    check_label(spec, events)
    path = resolve_model_path(config.encoder)
    hf_config = load_config(path)
    tokenizer = load_tokenizer(path, hf_config)
    check_max_length(config.max_length, tokenizer, hf_config)
    torch.manual_seed(config.seed)
    backbone = load_model(path)
    if config.mode == "lora":
        backbone = wrap_lora(backbone, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    data = events.dataset
    model = CrossEncoder(backbone, int(hf_config.hidden_size), data.n_users, data.n_items, config.head_dropout)
    return Classifier(model, tokenizer, config, spec, events)


# -- training ------------------------------------------------------------------------------------------


def _bias_loss(clf: Classifier, examples: Examples, features: torch.Tensor, l2: float) -> torch.Tensor:
    """Mean BCE of the bias terms plus the L2 penalty on the user and item biases."""
    model = clf.model
    logits = model.bias_logit(torch.as_tensor(examples.user), torch.as_tensor(examples.item), features)
    labels = torch.as_tensor(examples.label, dtype=logits.dtype)
    penalty = model.user_bias.weight.square().sum() + model.item_bias.weight.square().sum()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + l2 * penalty


def _fit_bias_l2(clf: Classifier, examples: Examples, features: torch.Tensor, l2: float) -> None:
    """Full-batch L-BFGS on the bias terms from zero."""
    params = clf.model.bias_parameters()
    with torch.no_grad():
        for p in params:
            p.zero_()
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _bias_loss(clf, examples, features, l2)
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_biases(clf: Classifier, train: Examples, valid: Examples, l2: float | None = None) -> dict[str, Any]:
    """Stage 1: fit the bias terms; `l2` None picks the grid value of lowest validation log-loss, or 1/N
    without validation examples (a prior variance of 1/2 on each bias whatever the number N of examples).

    Marks the users and items of `train` as known (all others use the fallback slot, bias 0), takes the
    training label rate as the prior of the past-rate feature, and each item's training label rate (shrunk
    towards it with RATE_PSEUDO_COUNT examples) as what the residual features measure departures from.
    """
    model = clf.model
    for p in model.bias_parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        model.user_known.zero_()
        model.item_known.zero_()
        if clf.config.user_bias:
            model.user_known[torch.as_tensor(np.unique(train.user))] = True
        model.item_known[torch.as_tensor(np.unique(train.item))] = True
        prior = float(train.label.mean())
        model.rate_prior.fill_(prior)
        model.item_rate.copy_(torch.from_numpy(shrunk_rates(train, clf.dataset.n_items, prior)))
    clf.refresh_residuals()
    train_features = torch.as_tensor(clf.features(train), dtype=torch.float32)
    valid_features = torch.as_tensor(clf.features(valid), dtype=torch.float32)
    grid = [l2] if l2 is not None else list(BIAS_L2_GRID) if len(valid) else [1.0 / len(train)]
    scores: dict[float, float] = {}
    for value in grid:
        _fit_bias_l2(clf, train, train_features, value)
        if len(valid):
            with torch.no_grad():
                scores[value] = float(_bias_loss(clf, valid, valid_features, 0.0))
    best = min(scores, key=scores.__getitem__) if scores else grid[0]
    if best != grid[-1]:
        _fit_bias_l2(clf, train, train_features, best)
    for p in model.bias_parameters():
        p.requires_grad_(False)
    return {
        "l2": best,
        "valid_logloss": scores,
        "feature_weights": dict(zip(HISTORY_FEATURES, model.feature_weights.tolist(), strict=True)),
        "prior": float(model.rate_prior),
    }


@dataclass
class _Batches:
    """Training texts rendered once, and the seeded generator that shuffles them and drops user biases."""

    histories: list[str]
    candidates: list[str]
    examples: Examples
    features: np.ndarray
    generator: torch.Generator


def _encoder_parameters(model: CrossEncoder) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(trainable encoder parameters, head parameters)."""
    encoder = [p for p in model.backbone.parameters() if p.requires_grad]
    return encoder, list(model.head.parameters())


def trainable_state(model: CrossEncoder) -> dict[str, torch.Tensor]:
    """Copies of the parameters stage 2 trains (to keep the best validation state)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _schedule(total: int, warmup: float):
    """Linear warm-up over `warmup` of the planned steps, then linear decay to zero."""
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def _valid_scores(valid: Examples, probs: np.ndarray) -> dict[str, float]:
    """Validation log-loss, and AUC when both classes are present."""
    scores = {"valid_logloss": log_loss(valid.label, probs)}
    if 0 < valid.label.sum() < len(valid):
        scores["valid_auc"] = roc_auc(valid.label, probs)
    return scores


def fit_encoder(clf: Classifier, train: Examples, valid: Examples, progress: bool = False) -> dict[str, Any]:
    """Stage 2: train the cross-encoder on `train` with the biases frozen; keep the best validation state."""
    config, model = clf.config, clf.model
    histories, candidates = clf.example_texts(train)
    truncated = int((pair_token_lengths(clf.tokenizer, histories, candidates) > config.max_length).sum())
    report_truncation(truncated, len(train), config.max_length)
    generator = torch.Generator().manual_seed(config.seed * 1000 + STREAM_TORCH)
    batches = _Batches(histories, candidates, train, clf.features(train), generator)
    encoder_params, head_params = _encoder_parameters(model)
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": config.encoder_lr}, {"params": head_params, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, config.warmup))
    # Validation inputs are rendered once: the bias terms, and so the history features, are frozen here.
    valid_texts = (*clf.example_texts(valid), clf.features(valid)) if len(valid) else None
    initial = _valid_scores(valid, clf.bias_probabilities(valid)) if len(valid) else {"valid_logloss": math.nan}
    best = {"step": 0, "logloss": initial["valid_logloss"]}
    best_state = trainable_state(model)
    checks: list[dict[str, float]] = []
    losses: list[float] = []
    started, step, stopped_by = time.perf_counter(), 0, "epochs"
    model.train()
    with tqdm(total=total, desc="training", unit="step", disable=not progress) as bar:
        for _ in range(config.epochs):
            for rows in torch.randperm(len(train), generator=generator).split(config.batch_size):
                losses.append(_train_step(clf, batches, rows.numpy(), optimizer))
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if valid_texts is not None and (step % config.eval_every == 0 or step == total):
                    _check(clf, valid, valid_texts, losses, checks, best, best_state)
                if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                    stopped_by = "time"
                    break
            if stopped_by == "time":
                break
    if valid_texts is not None and (not checks or checks[-1]["step"] != step):
        _check(clf, valid, valid_texts, losses, checks, best, best_state)
    if valid_texts is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return {
        "examples": len(train),
        "truncated": truncated,
        "steps": step,
        "planned_steps": total,
        "epochs": step / steps_per_epoch,
        "stopped_by": stopped_by,
        "seconds": time.perf_counter() - started,
        "best_step": best["step"] if valid_texts is not None else step,
        "best_valid_logloss": best["logloss"],
        "bias_valid": initial,
        "checks": checks,
    }


def _train_step(clf: Classifier, batches: _Batches, rows: np.ndarray, optimizer: torch.optim.Optimizer) -> float:
    """One optimiser step of BCE on a batch of rendered examples."""
    config = clf.config
    tokens = tokenize_pairs(
        clf.tokenizer, [batches.histories[i] for i in rows], [batches.candidates[i] for i in rows], config.max_length
    )
    examples = batches.examples.subset(rows)
    drop = torch.rand(len(rows), generator=batches.generator) < config.user_bias_dropout
    features = torch.as_tensor(batches.features[rows])
    logits = clf.model(tokens, torch.as_tensor(examples.user), torch.as_tensor(examples.item), features, drop)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.as_tensor(examples.label, dtype=logits.dtype)
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _check(
    clf: Classifier,
    valid: Examples,
    inputs: tuple[list[str], list[str], np.ndarray],
    losses: list[float],
    checks: list[dict[str, float]],
    best: dict[str, float],
    best_state: dict[str, torch.Tensor],
) -> None:
    """Evaluate on validation; keep the state when its log-loss is the best so far."""
    step = len(losses)
    since = len(losses) - (int(checks[-1]["step"]) if checks else 0)
    histories, candidates, features = inputs
    probs, _ = clf.predict_texts(histories, candidates, valid.user, valid.item, features)
    scores = _valid_scores(valid, probs)
    logloss = scores["valid_logloss"]
    checks.append({"step": step, "train_loss": float(np.mean(losses[-since:])), **scores})
    log.info("step %d: valid log-loss %.4f (best %.4f at step %d)", step, logloss, best["logloss"], best["step"])
    if not logloss >= best["logloss"]:
        best.update(step=step, logloss=logloss)
        best_state.update(trainable_state(clf.model))


@dataclass(frozen=True)
class ExampleSets:
    """The examples one run uses: all of each split, and the seeded subsamples actually trained and scored."""

    train: Examples
    valid: Examples
    test: Examples
    train_used: Examples
    valid_used: Examples
    test_used: Examples


def example_sets(events: EventLog, config: ClassifierConfig) -> ExampleSets:
    """Split the examples and draw the seeded subsamples (each from its own random stream)."""
    spec = parse_label(config.label)
    examples = build_examples(events, spec, config.negatives, config.seed, config.negative_sampling)
    train, valid, test = (examples.of_split(code) for code in (TRAIN, VALID, TEST))
    if not len(train) or not len(test):
        raise DataError(
            f"{events.dataset.path} has {len(train)} training and {len(test)} test events; prepare it with a "
            "temporal split such as `lmrec data prepare SOURCE --split temporal --cutoff 0.8`."
        )
    seed = config.seed
    return ExampleSets(
        train,
        valid,
        test,
        train.sample(config.max_train_examples, np.random.default_rng((seed, STREAM_TRAIN))),
        valid.sample(config.max_valid_examples, np.random.default_rng((seed, STREAM_VALID))),
        test.sample(config.max_test_examples, np.random.default_rng((seed, STREAM_TEST))),
    )


def train_classifier(
    events: EventLog, config: ClassifierConfig, sets: ExampleSets, progress: bool = False
) -> tuple[Classifier, dict[str, Any]]:
    """Build and train a classifier in two stages (biases, then the cross-encoder); return it and a report."""
    clf = build_classifier(config, events)
    bias_train = sets.train if config.bias_examples == "all" else sets.train_used
    biases = fit_biases(clf, bias_train, sets.valid_used, config.bias_l2)
    encoder = fit_encoder(clf, sets.train_used, sets.valid_used, progress)
    return clf, {"bias": {**biases, "examples": len(bias_train)}, "encoder": encoder}


# -- runs: train, evaluate, predict --------------------------------------------------------------------


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Trainable (in stage 2) and total parameter counts."""
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }


def train_run(
    data: str | Path, out: str | Path, config: ClassifierConfig, overwrite: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Train a classifier on a prepared dataset into run directory `out`; return (and write) its metrics."""
    from lmrec.text.encoder import TextEncoder

    dataset = PreparedDataset.load(data)
    events = load_events(dataset)
    check_label(parse_label(config.label), events)
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=False)
    encoder = TextEncoder(config.encoder, max_length=config.max_length)
    sets = example_sets(events, config)
    with run.lock():  # held from the start, so that a second training of this folder stops at once
        fresh = not any(p.name != LOCK_NAME for p in run.path.iterdir())
        try:
            metrics, clf, probs, baseline = _train_and_score(events, config, sets, progress)
        except BaseException:
            if fresh:
                run.discard()  # nothing was written; a replaced run stays as it was until the new one is done
            raise
        run.create(overwrite=overwrite, resume=False)
        save_model(clf, run.path / "model")
        save_predictions(run.path / "predictions" / "test.npz", sets.test_used, probs, baseline)
        atomic_write_text(run.config_file, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        info = {
            "model": MODEL_NAME,
            "dataset": str(Path(data).resolve()),
            "dataset_name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "label": config.label,
            "mode": config.mode,
            "encoder": str(encoder.path),
            "encoder_model_id": encoder.model_id,
            "lmrec_version": __version__,
            "state": "finished",
        }
        run.write_metrics({"model": MODEL_NAME, "dataset": dataset.name, **metrics})
        atomic_write_json(run.info_file, info)  # last: a run that reads as finished has its metrics
    return run.metrics()


def _train_and_score(
    events: EventLog, config: ClassifierConfig, sets: ExampleSets, progress: bool
) -> tuple[dict[str, Any], Classifier, np.ndarray, np.ndarray]:
    """Train the classifier, score the test examples, and gather the metrics (nothing is written here)."""
    started = time.perf_counter()
    clf, report = train_classifier(events, config, sets, progress)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probs, truncated = clf.predict(sets.test_used, progress)
    baseline = clf.bias_probabilities(sets.test_used)
    test_seconds = time.perf_counter() - started
    metrics = {
        "model": MODEL_NAME,
        "label": config.label,
        "mode": config.mode,
        "test": classification_metrics(sets.test_used.label, probs),
        "baseline": classification_metrics(sets.test_used.label, baseline),
        "baseline_name": "stage 1 alone: logistic regression on user and item biases"
        + (" and the past label rate" if config.past_rate else ""),
        "examples": {
            "train": len(sets.train),
            "train_used": len(sets.train_used),
            "bias_train": report["bias"]["examples"],
            "valid": len(sets.valid),
            "valid_used": len(sets.valid_used),
            "test": len(sets.test),
            "test_used": len(sets.test_used),
            "test_subsampled": len(sets.test_used) < len(sets.test),
            "test_positive_rate": float(sets.test_used.label.mean()),
        },
        "truncated": {"max_length": config.max_length, "train": report["encoder"]["truncated"], "test": truncated},
        "training": report,
        "parameters": count_parameters(clf.model),
        "train_seconds": train_seconds,
        "test_seconds": test_seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }
    return metrics, clf, probs, baseline


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_predictions(path: Path, examples: Examples, probs: np.ndarray, baseline: np.ndarray) -> None:
    """Per-example test predictions, for bootstrap intervals and paired comparisons without re-running the model."""
    arrays = {"user": examples.user, "item": examples.item, "end": examples.end, "label": examples.label}
    atomic_write(path, lambda handle: np.savez(handle, **arrays, prob=probs, baseline=baseline))


def load_predictions(run: str | Path) -> dict[str, np.ndarray]:
    """The saved test predictions of a classifier run."""
    path = Path(run) / "predictions" / "test.npz"
    if not path.is_file():
        raise RunError(f"{run} has no test predictions ({path}); train it with `lmrec classify train`.")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def save_model(clf: Classifier, folder: Path) -> None:
    """Write the adapter (lora) or whole encoder + tokenizer (full), and the head and biases; swap the folder in."""
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if clf.config.mode == "lora":
        clf.model.backbone.save_pretrained(staging / "adapter")
    else:
        clf.model.backbone.save_pretrained(staging / "encoder")
        clf.tokenizer.save_pretrained(staging / "encoder")
    head = {k: v for k, v in clf.model.state_dict().items() if not k.startswith("backbone.")}
    atomic_write(staging / "head.pt", lambda handle: torch.save(head, handle))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)


def load_run(run: str | Path, data: str | Path | None = None) -> Classifier:
    """A trained classifier from its run directory, bound to its dataset (checked by fingerprint)."""
    from lmrec.text.encoder import TextEncoder, load_config, load_model, load_tokenizer

    rundir = RunDir(run)
    info = rundir.info()
    if info.get("model") != MODEL_NAME:
        raise RunError(f"{run} is a {info.get('model')} run, not a behaviour classifier (`lmrec classify train`).")
    config = make_config(**_read_yaml(rundir.config_file))
    dataset = PreparedDataset.load(data or info["dataset"])
    if dataset.fingerprint != info["fingerprint"]:
        raise RunError(f"run {run} was trained on another dataset preparation; its ids do not match {dataset.path}.")
    events = load_events(dataset)
    folder = rundir.path / "model"
    if config.mode == "lora":
        base = TextEncoder(info["encoder"], max_length=config.max_length)
        if base.model_id != info["encoder_model_id"]:
            raise RunError(f"the base encoder in {base.path} has changed since run {run} was trained.")
        path = base.path
    else:
        path = folder / "encoder"
    hf_config = load_config(path)
    backbone = load_model(path)
    if config.mode == "lora":
        from peft import PeftModel

        from lmrec.text.lora import peft_quietly

        with peft_quietly():
            backbone = PeftModel.from_pretrained(backbone, folder / "adapter")
    model = CrossEncoder(backbone, int(hf_config.hidden_size), dataset.n_users, dataset.n_items, config.head_dropout)
    _load_head(model, folder / "head.pt")
    model.eval()
    return Classifier(model, load_tokenizer(path, hf_config), config, parse_label(config.label), events)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping (malformed YAML is one sentence with its line)."""
    if not path.is_file():
        raise RunError(f"{path} does not exist; the run directory is incomplete.")
    return load_yaml(path)


def _load_head(model: CrossEncoder, path: Path) -> None:
    """Load the head and bias tables, refusing a file that does not fit the model."""
    if not path.is_file():
        raise RunError(f"{path} does not exist; the run did not finish training.")
    state = load_checkpoint(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise RunError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise RunError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}).")


@dataclass(frozen=True)
class Prediction:
    """One predicted probability, in original ids."""

    item_id: str
    title: str
    probability: float
    seen: bool


class LaterEvent(Protocol):
    """An event after the dataset's (e.g. one posted to the service): its item, type and optional value."""

    item_id: str
    type: str | None
    value: float | None


def predict_user(
    clf: Classifier, user_id: str, item_ids: Sequence[str], later: Sequence[LaterEvent] = ()
) -> list[Prediction]:
    """Probabilities of the behaviour for one user (original id) and items, after the user's full known history
    followed by `later` events in time order (the service's live history; items the dataset lacks are skipped).

    The history text reads both; the history features (past label rate, residual, affinity) read the
    dataset's events only, as they are defined over its rows.
    """
    data = clf.dataset
    user = data.user_index.get(user_id)
    if user is None and not later:
        raise DataError(f"user {user_id!r} is not in {data.path}.")
    unknown = [i for i in item_ids if i not in data.item_index]
    if unknown:
        raise DataError(f"item {unknown[0]!r} is not in {data.path}.")
    items = np.asarray([data.item_index[i] for i in item_ids], dtype=np.int64)
    rows = np.arange(data.offsets[user], data.offsets[user + 1]) if user is not None else np.zeros(0, np.int64)
    recent_rows, recent_later = _recent(clf, rows, later)
    history = [*data.items[recent_rows].tolist(), *(data.item_index[e.item_id] for e in recent_later)]
    notes = [*clf.notes[recent_rows].tolist(), *(_later_note(clf, e) for e in recent_later)]
    text = clf.history_text(history[::-1], notes[::-1])
    users = np.full(len(items), -1 if user is None else user, dtype=np.int64)
    probs, truncated = clf.predict_texts(
        [text] * len(items), [clf.item_texts[i] for i in items.tolist()], users, items, _features(clf, user, items)
    )
    report_truncation(int(truncated.sum()), len(items), clf.config.max_length)
    in_dataset = np.isin(items, data.items[rows]).tolist()
    stored = {e.item_id for e in later}
    return [
        Prediction(item_id, data.item_title(int(i)), float(p), seen or item_id in stored)
        for item_id, i, p, seen in zip(item_ids, items, probs, in_dataset, strict=True)
    ]


def _recent(clf: Classifier, rows: np.ndarray, later: Sequence[LaterEvent]) -> tuple[np.ndarray, list[LaterEvent]]:
    """The last `config.history` events of the user's dataset `rows` followed by the `later` events whose item
    the dataset knows, oldest first. Read from the end, so that a long history costs nothing per request."""
    length = clf.config.history
    known: list[LaterEvent] = []
    for event in reversed(later):
        if len(known) == length:
            break
        if event.item_id in clf.dataset.item_index:
            known.append(event)
    return rows[max(len(rows) - (length - len(known)), 0) :], known[::-1]


def _features(clf: Classifier, user: int | None, items: np.ndarray) -> np.ndarray:
    """History features of candidate items after a user's whole dataset history (zeros for an unknown user)."""
    if user is None:
        return np.zeros((len(items), len(HISTORY_FEATURES)))
    end = np.full(len(items), clf.dataset.offsets[user + 1], dtype=np.int64)
    zeros = np.zeros(len(items), dtype=np.int8)
    return clf.features(Examples(np.full(len(items), user, dtype=np.int64), items, end, zeros, zeros))


def _later_note(clf: Classifier, event: LaterEvent) -> str:
    """The history note of a later event, as the dataset's events get theirs (`event_notes`)."""
    spec = clf.spec
    value = math.nan if event.value is None else float(event.value)
    positive = spec.kind == "value" and not math.isnan(value) and bool(_OPERATORS[spec.op](value, spec.threshold))
    return spec.note(value, event.type, positive, clf.config.label_words)


# -- evaluation with intervals -------------------------------------------------------------------------


def classification_intervals(
    labels: np.ndarray,
    probs: dict[str, np.ndarray],
    reference: str | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Interval]]:
    """Percentile-bootstrap intervals of every classification metric of each named set of probabilities.

    All sets are resampled on the same example indices; with `reference`, entries "<name> - <reference>"
    hold the paired differences. Resamples holding one class only (AUC undefined) are skipped.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    point = {name: classification_metrics(labels, p) for name, p in probs.items()}
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in probs}
    for _ in range(n_resamples):
        rows = rng.integers(0, len(labels), size=len(labels))
        if labels[rows].min() == labels[rows].max():
            continue
        for name, p in probs.items():
            draws[name].append(classification_metrics(labels[rows], p[rows]))
    tail = (1.0 - level) / 2.0
    out: dict[str, dict[str, Interval]] = {}
    names = [(name, name, None) for name in probs]
    if reference is not None:
        names += [(f"{name} - {reference}", name, reference) for name in probs if name != reference]
    for key, name, ref in names:
        out[key] = {}
        for metric in METRICS:
            values = np.array([d[metric] for d in draws[name]])
            mean = point[name][metric]
            if ref is not None:
                values = values - np.array([d[metric] for d in draws[ref]])
                mean -= point[ref][metric]
            low, high = np.quantile(values, [tail, 1.0 - tail]) if len(values) else (math.nan, math.nan)
            out[key][metric] = Interval(float(mean), float(low), float(high), level)
    return out


def evaluate_run(run: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, Interval]]:
    """Metrics of a classifier run and of its bias baseline on the saved test predictions, with 95% intervals."""
    saved = load_predictions(run)
    probs = {"cross-encoder": saved["prob"], "bias baseline": saved["baseline"]}
    return classification_intervals(saved["label"], probs, "bias baseline", n_resamples, seed=seed)


# -- re-ranking ----------------------------------------------------------------------------------------


def history_rows(dataset: PreparedDataset, users: np.ndarray, positions: np.ndarray, length: int) -> np.ndarray:
    """[B, length] right-aligned event rows of the `length` events before each user's `positions[b]`; -1 pads."""
    users, positions = np.asarray(users), np.asarray(positions)
    steps = np.arange(-length, 0)
    rows = dataset.offsets[users][:, None] + positions[:, None] + steps[None, :]
    return np.where(positions[:, None] + steps[None, :] >= 0, rows, -1)


def rerank_probabilities(
    clf: Classifier,
    users: np.ndarray,
    histories: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[B, K] probabilities of candidate items (indices, 0 = padding → probability 0) after right-aligned
    item-index histories [B, L] (0 = padding) of users (indices, -1 unknown).

    `rows` ([B, L] event rows aligned with `histories`, -1 padding; see `history_rows`) lets the history
    show each event's value ("rated 5, liked") and gives the history features (`Classifier.row_features`);
    without it events are shown without values and the features are zero. Only the last `config.history` events
    are read and each pair is cut to `config.max_length` tokens, so one candidate costs one bounded
    encoder pass.
    """
    histories, candidates = np.asarray(histories), np.asarray(candidates)
    size = clf.config.history
    texts = []
    for b in range(len(histories)):
        keep = np.flatnonzero(histories[b] > 0)[::-1][:size]
        notes = clf.notes[rows[b, keep]].tolist() if rows is not None else [""] * len(keep)
        texts.append(clf.history_text(histories[b, keep].tolist(), notes))
    pairs = np.argwhere(candidates > 0)
    probs = np.zeros(candidates.shape, dtype=np.float64)
    if len(pairs):
        b, k = pairs[:, 0], pairs[:, 1]
        items = candidates[b, k].astype(np.int64)
        if rows is None:
            features = np.zeros((len(items), len(HISTORY_FEATURES)))
        else:
            features = clf.row_features(items, np.asarray(rows)[b])
        found, _ = clf.predict_texts(
            [texts[i] for i in b.tolist()],
            [clf.item_texts[i] for i in items.tolist()],
            np.asarray(users, dtype=np.int64)[b],
            items,
            features,
            progress,
        )
        probs[b, k] = found
    return probs


def rerank(
    clf: Classifier,
    users: np.ndarray,
    histories: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray | None = None,
    progress: bool = False,
    first_stage: np.ndarray | None = None,
    weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [B, K] reordered, their probabilities); padding goes last.

    Without `weight` the order is the classifier's probability alone; with it, `first_stage + weight *
    logit(p)`, where `first_stage` holds the candidates' [B, K] first-stage scores (e.g. next-item logits).
    """
    candidates = np.asarray(candidates)
    probs = rerank_probabilities(clf, users, histories, candidates, rows, progress)
    order = rerank_order(candidates, probs, first_stage, weight)
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(probs, order, 1)


def rerank_order(
    candidates: np.ndarray, probs: np.ndarray, first_stage: np.ndarray | None = None, weight: float | None = None
) -> np.ndarray:
    """[B, K] positions of the candidates in re-ranked order: by probability alone (no `weight`), or by
    first-stage score + weight x log-odds. With next-item logits as the first stage and weight 1 this
    multiplies the first stage's probability by the classifier's odds (a product of experts); weight 0
    keeps the first stage's order. Padding candidates (0) go last; ties keep the given order."""
    if weight is None:
        keys = np.asarray(probs, dtype=np.float64)
    elif first_stage is None:
        raise ValueError("blending with a weight needs the candidates' first-stage scores")
    else:
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)
        keys = np.asarray(first_stage, dtype=np.float64) + weight * (np.log(clipped) - np.log1p(-clipped))
    keys = np.where(np.asarray(candidates) > 0, keys, -np.inf)
    return np.argsort(-keys, axis=1, kind="stable")
