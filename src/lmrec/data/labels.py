"""Labelled examples for behaviour classification, from a prepared log.

Every event of the prepared dataset is an example: train = split 0, valid = split 1 (early stopping and
the bias L2 strength), test = split 2. With `sampled` labels each logged event is a positive and gets
`negatives` items the user never interacted with, drawn uniformly at the same moment. The history of an
example is the user's events with strictly earlier timestamps (events at the same second are left out),
most recent first, each rendered as its item text and the label-relevant value known at that time
("Toy Story (1995) | Animation Children's Comedy — rated 5, liked").
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pyarrow.parquet as pq

from lmrec.data.dataset import INTERACTIONS, TEST, TRAIN, VALID, PreparedDataset
from lmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Independent random streams, so that e.g. the test subsample does not depend on the training budget
# (stream 5 seeds the classifier's training loop, in `lmrec.training.classifier`).
STREAM_NEGATIVES, STREAM_TRAIN, STREAM_VALID, STREAM_TEST = 1, 2, 3, 4

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

    def value_positive(self, value: float) -> bool:
        """Whether one value meets a value comparison (False for other specs and for a missing value)."""
        return self.kind == "value" and not math.isnan(value) and bool(_OPERATORS[self.op](value, self.threshold))


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
    """The arrays of examples in constructor order."""
    return examples.user, examples.item, examples.end, examples.label, examples.split


# -- the example sets of one run -----------------------------------------------------------------------


class ExampleSettings(Protocol):
    """The settings `example_sets` reads (a classifier config has them), so that data needs no model config."""

    @property
    def label(self) -> str: ...
    @property
    def negatives(self) -> int: ...
    @property
    def negative_sampling(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def max_train_examples(self) -> int | None: ...
    @property
    def max_valid_examples(self) -> int: ...
    @property
    def max_test_examples(self) -> int | None: ...


@dataclass(frozen=True)
class ExampleSets:
    """The examples one run uses: all of each split, and the seeded subsamples actually trained and scored."""

    train: Examples
    valid: Examples
    test: Examples
    train_used: Examples
    valid_used: Examples
    test_used: Examples


def example_sets(events: EventLog, settings: ExampleSettings) -> ExampleSets:
    """Split the examples and draw the seeded subsamples (each from its own random stream)."""
    spec = parse_label(settings.label)
    examples = build_examples(events, spec, settings.negatives, settings.seed, settings.negative_sampling)
    train, valid, test = (examples.of_split(code) for code in (TRAIN, VALID, TEST))
    if not len(train) or not len(test):
        raise DataError(
            f"{events.dataset.path} has {len(train)} training and {len(test)} test events; prepare it with a "
            "temporal split such as `lmrec data prepare SOURCE --split temporal --cutoff 0.8`."
        )
    seed = settings.seed
    return ExampleSets(
        train,
        valid,
        test,
        train.sample(settings.max_train_examples, np.random.default_rng((seed, STREAM_TRAIN))),
        valid.sample(settings.max_valid_examples, np.random.default_rng((seed, STREAM_VALID))),
        test.sample(settings.max_test_examples, np.random.default_rng((seed, STREAM_TEST))),
    )


def history_rows(dataset: PreparedDataset, users: np.ndarray, positions: np.ndarray, length: int) -> np.ndarray:
    """[B, length] right-aligned event rows of the `length` events before each user's `positions[b]`; -1 pads."""
    users, positions = np.asarray(users), np.asarray(positions)
    steps = np.arange(-length, 0)
    rows = dataset.offsets[users][:, None] + positions[:, None] + steps[None, :]
    return np.where(positions[:, None] + steps[None, :] >= 0, rows, -1)
