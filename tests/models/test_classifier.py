"""The behaviour classifier bound to its dataset: history texts, strict-past history features, truncation."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from classifier_helpers import config
from lmrec.data.labels import EventLog, build_examples, example_sets
from lmrec.inference.classifier import build_classifier
from lmrec.models.classifier import NO_HISTORY
from lmrec.models.cross_encoder import pair_token_lengths
from lmrec.training.classifier import fit_biases


def test_history_text_is_the_recent_strict_past_with_values(tiny_bert: Path, events: EventLog) -> None:
    clf = build_classifier(config(tiny_bert, history=3), events)
    data = events.dataset
    examples = build_examples(events, clf.spec)
    rows = np.flatnonzero(examples.end - data.offsets[examples.user] >= 3)[:5]
    histories, candidates = clf.example_texts(examples.subset(rows))
    for row, text, candidate in zip(rows, histories, candidates, strict=True):
        end = examples.end[row]
        words = {r: "liked" if events.values[r] >= 4 else "disliked" for r in (end - 1, end - 2, end - 3)}
        expected = [f"{data.item_text[data.items[r]]} — rated {events.values[r]:g}, {w}" for r, w in words.items()]
        assert text == " ; ".join(expected)
        assert candidate == data.item_text[data.items[row]]
    first = np.flatnonzero(examples.end == data.offsets[examples.user])[:1]
    assert clf.example_texts(examples.subset(first))[0] == [NO_HISTORY]


def test_past_rate_counts_only_the_strict_past(tiny_bert: Path, events: EventLog) -> None:
    cfg = config(tiny_bert)
    clf = build_classifier(cfg, events)
    sets = example_sets(events, cfg)
    report = fit_biases(clf, sets.train, sets.valid_used)
    prior = sets.train.label.mean()
    assert report["prior"] == pytest.approx(prior)
    examples = build_examples(events, clf.spec)
    rates = clf.past_rate(examples)
    data = events.dataset
    for row in range(0, len(examples), 7):
        past = events.values[data.offsets[examples.user[row]] : examples.end[row]] >= 4
        assert rates[row] == pytest.approx((past.sum() + 5 * prior) / (len(past) + 5) - prior, abs=1e-6)
    off = build_classifier(config(tiny_bert, past_rate=False), events)
    assert not off.past_rate(examples).any()


def test_history_features_are_computed_from_the_strict_past_only(tiny_bert: Path, events: EventLog) -> None:
    cfg = config(tiny_bert)
    clf = build_classifier(cfg, events)
    sets = example_sets(events, cfg)
    report = fit_biases(clf, sets.train, sets.valid_used)
    assert set(report["feature_weights"]) == {"past_rate", "past_residual", "text_affinity"}
    data, prior = events.dataset, sets.train.label.mean()
    item_rate = clf.model.item_rate.numpy()
    for item in (1, 5, 9):
        labels = sets.train.label[sets.train.item == item]
        assert item_rate[item] == pytest.approx((labels.sum() + 5 * prior) / (len(labels) + 5))
    examples = build_examples(events, clf.spec)
    features = clf.features(examples)
    vectors = clf.item_vectors
    for row in range(0, len(examples), 11):
        past = np.arange(data.offsets[examples.user[row]], examples.end[row])
        residuals = (events.values[past] >= 4) - item_rate[data.items[past]]
        assert features[row, 1] == pytest.approx(residuals.sum() / (len(past) + 5), abs=1e-9)
        weights = np.maximum(vectors[data.items[past]] @ vectors[examples.item[row]], 0) ** 2
        assert features[row, 2] == pytest.approx((weights * residuals).sum() / (weights.sum() + 1), abs=1e-6)
    row = int(np.argmax(examples.end - data.offsets[examples.user]))  # the example with the longest past
    future = np.arange(examples.end[row], data.offsets[examples.user[row] + 1])
    values = events.values.copy()
    values[future] = 6 - values[future]  # every event from this one on changes its label
    changed = build_classifier(cfg, dataclasses.replace(events, values=values))
    changed.model.load_state_dict(clf.model.state_dict())
    changed.refresh_residuals()
    assert np.allclose(changed.features(examples.subset(np.array([row]))), features[row])
    off = build_classifier(config(tiny_bert, past_residual=False, text_affinity=False), events)
    assert off.item_vectors is None and not off.features(examples)[:, 1:].any()


def test_truncated_examples_are_counted_and_logged(tiny_bert: Path, events: EventLog, caplog) -> None:
    clf = build_classifier(config(tiny_bert, max_length=16), events)
    examples = build_examples(events, clf.spec).subset(np.arange(60))
    with caplog.at_level(logging.WARNING, logger="lmrec.models.classifier"):
        probs, truncated = clf.predict(examples)
    lengths = pair_token_lengths(clf.tokenizer, *clf.example_texts(examples))
    assert truncated == int((lengths > 16).sum()) > 0
    assert f"{truncated} of 60 examples were longer than 16 tokens and were cut" in caplog.text
    assert probs.shape == (60,) and ((probs > 0) & (probs < 1)).all()
