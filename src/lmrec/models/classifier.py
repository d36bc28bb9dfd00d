"""The behaviour classifier bound to its dataset: its config, the history features of the bias terms, the
(history, candidate) texts, and batched prediction.

The three history features (`HISTORY_FEATURES`) read only the user's strict past, so they are defined for
users the training log never saw: the past label rate (shrunk towards the training rate: an online user
bias), the past residual (how the user's labels departed from those items' training rates: leniency net of
what they chose), and the text affinity (those departures weighted by how much each past item's text
resembles the candidate's, max(cos, 0)² of the frozen encoder's embeddings over the last 50 events).
Loading the encoder and the item embeddings from disk is `lmrec.inference.classifier`'s; training is
`lmrec.training.classifier`'s. This module reads no files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmrec.data.dataset import PreparedDataset
from lmrec.data.labels import EventLog, Examples, LabelSpec, event_labels, event_notes
from lmrec.errors import ConfigError
from lmrec.models.cross_encoder import (
    HISTORY_JOIN,
    RATE_PSEUDO_COUNT,
    CrossEncoder,
    pair_token_lengths,
    tokenize_pairs,
)

log = logging.getLogger(__name__)

MODEL_NAME = "cross_encoder"
NO_HISTORY = "no earlier events"
DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}
AFFINITY_CHUNK = 1024  # candidates per block when comparing item texts (bounds memory at W x dim floats each)


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


class Classifier:
    """A cross-encoder bound to its dataset: it renders examples into text pairs and predicts probabilities.

    `item_vectors` ([n_items + 1, dim] normalised item-text embeddings, or None without the text-affinity
    feature) are computed by the caller, since they come from an encoder on disk.
    """

    def __init__(
        self,
        model: CrossEncoder,
        tokenizer,
        config: ClassifierConfig,
        spec: LabelSpec,
        events: EventLog,
        item_vectors: np.ndarray | None = None,
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
        self.item_vectors = item_vectors
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
        on_batch: Callable[[int], object] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, truncated flags) of text pairs with each user, item and history-feature row, batched
        by token length; the model's train/eval mode is restored. `on_batch(n)` hears of each scored batch
        (e.g. a progress bar's `update`), since a model does not print."""
        lengths = pair_token_lengths(self.tokenizer, histories, candidates)
        order = np.argsort(np.minimum(lengths, self.config.max_length), kind="stable")
        logits = np.empty(len(histories), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        size = self.config.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                tokens = tokenize_pairs(
                    self.tokenizer, [histories[i] for i in rows], [candidates[i] for i in rows], self.config.max_length
                )
                out = self.model(
                    tokens, torch.as_tensor(users[rows]), torch.as_tensor(items[rows]), torch.as_tensor(features[rows])
                )
                logits[rows] = out.double().numpy()
                if on_batch is not None:
                    on_batch(len(rows))
        self.model.train(was_training)
        return torch.sigmoid(torch.from_numpy(logits)).numpy(), lengths > self.config.max_length

    def predict(self, examples: Examples, on_batch: Callable[[int], object] | None = None) -> tuple[np.ndarray, int]:
        """(probabilities, number of truncated examples) of examples."""
        histories, candidates = self.example_texts(examples)
        features = self.features(examples)
        probs, truncated = self.predict_texts(histories, candidates, examples.user, examples.item, features, on_batch)
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


def shrunk_rates(examples: Examples, n_items: int, prior: float) -> np.ndarray:
    """[n_items + 1] label rate of each item over `examples`, shrunk towards `prior` with RATE_PSEUDO_COUNT
    pseudo-examples (the prior for items without examples)."""
    counts = np.bincount(examples.item, minlength=n_items + 1)
    positives = np.bincount(examples.item, weights=examples.label.astype(np.float64), minlength=n_items + 1)
    return (positives + RATE_PSEUDO_COUNT * prior) / (counts + RATE_PSEUDO_COUNT)
