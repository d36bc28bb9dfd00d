"""Labelled examples for behaviour classification: label specs, event labels and notes, strict-past histories,
sampled negatives."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest

from lmrec.data.labels import (
    EventLog,
    build_examples,
    event_labels,
    event_notes,
    negative_weights,
    parse_label,
    sample_unseen,
)
from lmrec.errors import ConfigError, DataError

# -- labels --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "op", "threshold", "event_type"),
    [
        ("rating>=4", "value", ">=", 4.0, ""),
        (" value < 2.5 ", "value", "<", 2.5, ""),
        ("rating==5", "value", "==", 5.0, ""),
        ("rating > -1", "value", ">", -1.0, ""),
        ("type=purchase", "type", "==", 0.0, "purchase"),
        ("event_type==click", "type", "==", 0.0, "click"),
        ("sampled", "sampled", "", 0.0, ""),
    ],
)
def test_label_specs_parse(text: str, kind: str, op: str, threshold: float, event_type: str) -> None:
    spec = parse_label(text)
    assert (spec.kind, spec.op, spec.threshold, spec.event_type) == (kind, op, threshold, event_type)


@pytest.mark.parametrize(
    "text", ["", "rating", "rating>>4", "rating>=four", "rating=4", "rating>=nan", "type>purchase", "type=", "like"]
)
def test_bad_label_specs_are_one_sentence(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_label(text)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_labels_need_their_column(events: EventLog) -> None:
    with pytest.raises(DataError, match="event_type column"):
        event_labels(parse_label("type=purchase"), events)
    with pytest.raises(ConfigError, match="not this dataset's value column"):
        event_labels(parse_label("price>=4"), events)
    labels = event_labels(parse_label("rating>=4"), events)
    assert np.array_equal(labels, (events.values >= 4).astype(np.int8))
    assert events.value_name == "rating"


def test_history_notes_show_the_value_and_its_label(events: EventLog) -> None:
    rating = parse_label("rating>=4")
    assert rating.note(4.0, None, True, ("liked", "disliked")) == "rated 4, liked"
    assert rating.note(3.5, None, False, ("yes", "no")) == "rated 3.5, no"
    assert rating.note(float("nan"), None, False, ("yes", "no")) == ""
    assert parse_label("value<2").note(1.0, None, True, ("a", "b")) == "value 1, a"
    assert parse_label("type=purchase").note(math.nan, "view", False, ("a", "b")) == "view"
    assert parse_label("sampled").note(5.0, "view", True, ("a", "b")) == ""
    notes = event_notes(rating, events, ("liked", "disliked"))
    assert notes[0] == f"rated {events.values[0]:g}, {'liked' if events.values[0] >= 4 else 'disliked'}"


def test_events_without_a_value_are_not_examples(events: EventLog, caplog) -> None:
    values = events.values.copy()
    values[[0, 5]] = np.nan
    holed = dataclasses.replace(events, values=values)
    with caplog.at_level(logging.WARNING, logger="lmrec.data.labels"):
        examples = build_examples(holed, parse_label("rating>=4"))
    assert len(examples) == len(values) - 2 and "2 of" in caplog.text


# -- examples and histories ----------------------------------------------------------------------------


def test_histories_hold_only_strictly_earlier_events(events: EventLog) -> None:
    data = events.dataset
    examples = build_examples(events, parse_label("rating>=4"))
    assert len(examples) == len(data.items)
    ties = 0
    for row in range(len(examples)):
        user, end = examples.user[row], examples.end[row]
        start, stop = data.offsets[user], data.offsets[user + 1]
        history = data.timestamps[start:end]
        assert (history < data.timestamps[row]).all()
        later = data.timestamps[end:stop]
        assert (later >= data.timestamps[row]).all()  # every strictly earlier event is in the history
        ties += int((data.timestamps[start:row] == data.timestamps[row]).sum())
    assert ties > 0, "the fixture must have events tied with earlier rows of the same user"


def test_sampled_negatives_are_unseen_items_at_the_same_moment(events: EventLog) -> None:
    data = events.dataset
    examples = build_examples(events, parse_label("sampled"), negatives=2, seed=1)
    n = len(data.items)
    assert len(examples) == 3 * n and examples.label[:n].all() and not examples.label[n:].any()
    negatives = examples.subset(np.arange(n, 3 * n))
    for user, item in zip(negatives.user, negatives.item, strict=True):
        assert item not in data.sequence(user)
    assert np.array_equal(negatives.end, np.repeat(events.history_end, 2))
    again = build_examples(events, parse_label("sampled"), negatives=2, seed=1)
    assert np.array_equal(again.item, examples.item)


def test_popularity_negatives_follow_the_weights_and_stay_unseen(events: EventLog) -> None:
    data = events.dataset
    weights = negative_weights(events, "popularity")
    train_items = data.items[data.split == 0]
    assert np.array_equal(weights, np.bincount(train_items, minlength=data.n_items + 1))
    users = np.repeat(np.arange(data.n_users), 50)
    drawn = sample_unseen(events, users, np.random.default_rng(0), weights)
    assert weights[drawn].min() > 0
    assert all(item not in data.sequence(user) for user, item in zip(users, drawn, strict=True))
    only = np.zeros_like(weights)
    only[data.items[0]] = 1.0  # the one drawable item is one user 0 has seen
    with pytest.raises(DataError, match="every item that can be drawn"):
        sample_unseen(events, users, np.random.default_rng(0), only)
    counts = np.bincount(drawn, minlength=data.n_items + 1)[1:]
    assert np.corrcoef(counts, weights[1:])[0, 1] > 0.3  # popular items are drawn more often
