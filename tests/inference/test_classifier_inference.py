"""A behaviour classifier put to use: loading a run, re-ranking, predictions after the full and live history."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier_helpers import config
from lmrec.data.dataset import PreparedDataset
from lmrec.data.labels import EventLog, Examples, history_rows
from lmrec.data.prepare import prepare
from lmrec.errors import DataError, RunError
from lmrec.inference.classifier import (
    _later_note,
    build_classifier,
    load_run,
    predict_user,
    rerank,
    rerank_order,
    rerank_probabilities,
)
from lmrec.training.classifier import train_run


def test_runs_refuse_another_dataset(tiny_bert: Path, rated: PreparedDataset, tmp_path: Path) -> None:
    train_run(rated.path, tmp_path / "run", config(tiny_bert, epochs=1, max_test_examples=10))
    other = prepare(rated.path.parent / "log.csv", tmp_path / "other", split="temporal", cutoff=0.5)
    with pytest.raises(RunError, match="another dataset preparation"):
        load_run(tmp_path / "run", other.path)


def test_rerank_orders_candidates_by_probability(tiny_bert: Path, events: EventLog) -> None:
    clf = build_classifier(config(tiny_bert), events)
    with torch.no_grad():
        clf.model.head.weight.normal_()
        clf.model.feature_weights.fill_(1.0)
        clf.model.rate_prior.fill_(0.5)
    data = events.dataset
    users = np.array([0, 1])
    positions = np.array([3, 0])
    rows = history_rows(data, users, positions, 5)
    assert (rows[1] == -1).all() and rows[0].tolist() == [-1, -1, *range(data.offsets[0], data.offsets[0] + 3)]
    histories = np.where(rows >= 0, data.items[np.maximum(rows, 0)], 0)
    candidates = np.array([[1, 2, 3, 0], [4, 0, 5, 6]])
    probs = rerank_probabilities(clf, users, histories, candidates, rows)
    assert probs.shape == (2, 4) and probs[0, 3] == 0 and probs[1, 1] == 0
    expected, _ = clf.predict_texts(
        [clf.rows_text(np.arange(data.offsets[0] + 2, data.offsets[0] - 1, -1))],
        [clf.item_texts[2]],
        users[:1],
        candidates[0, 1:2],
        clf.features(Examples(users[:1], candidates[0, 1:2], rows[0, -1:] + 1, users[:1] * 0, users[:1] * 0)),
    )
    assert probs[0, 1] == pytest.approx(expected[0])
    ordered, sorted_probs = rerank(clf, users, histories, candidates, rows)
    assert ordered[0, -1] == 0 and ordered[1, -1] == 0
    assert (np.diff(sorted_probs[:, :3], axis=1) <= 0).all()
    assert sorted(ordered[1].tolist()) == sorted(candidates[1].tolist())


def test_blended_rerank_order_moves_from_the_first_stage_to_the_classifier() -> None:
    candidates = np.array([[5, 6, 7, 0]])
    first = np.array([[3.0, 2.0, 1.0, 0.0]])
    probs = np.array([[0.1, 0.5, 0.9, 0.0]])
    order = lambda *args: candidates[0, rerank_order(candidates, probs, *args)[0]].tolist()  # noqa: E731
    assert order() == [7, 6, 5, 0]  # probability alone
    assert order(first, 0.0) == [5, 6, 7, 0]  # the first stage's order
    # keys 3 - 2.197w, 2, 1 + 2.197w: below w = 0.455 the first stage's order holds, above it the classifier's
    assert order(first, 0.4) == [5, 6, 7, 0]
    assert order(first, 0.5) == [7, 6, 5, 0]


def test_predict_user_uses_the_full_history(tiny_bert: Path, events: EventLog) -> None:
    clf = build_classifier(config(tiny_bert), events)
    data = events.dataset
    user_id = data.user_ids[2]
    seen_item = data.item_ids[data.sequence(2)[0]]
    predictions = predict_user(clf, user_id, [seen_item, data.item_ids[1]])
    assert [p.item_id for p in predictions] == [seen_item, data.item_ids[1]]
    assert predictions[0].seen and all(0 < p.probability < 1 for p in predictions)
    with pytest.raises(DataError, match="user 'nobody'"):
        predict_user(clf, "nobody", [seen_item])
    with pytest.raises(DataError, match="item 'nothing'"):
        predict_user(clf, user_id, ["nothing"])


@dataclasses.dataclass(frozen=True)
class Later:
    item_id: str
    type: str | None
    value: float | None


@pytest.mark.parametrize(("user", "n_later"), [(2, 0), (2, 3), (2, 12), (None, 3)])
def test_predict_user_reads_the_latest_events_and_marks_the_whole_history_seen(
    tiny_bert: Path, events: EventLog, monkeypatch: pytest.MonkeyPatch, user: int | None, n_later: int
) -> None:
    """The history text is that of the last `history` events of the dataset's and the later ones (unknown
    items skipped); `seen` covers the whole history, also events older than the text shows."""
    clf = build_classifier(config(tiny_bert), events)
    data = events.dataset
    rows = np.arange(data.offsets[user], data.offsets[user + 1]) if user is not None else np.zeros(0, np.int64)
    later = [Later(data.item_ids[1 + k % 5], "rating", float(1 + k % 5)) for k in range(n_later)]
    later[1:1] = [Later("unknown", "view", None)] if later else []
    known = [e for e in later if e.item_id in data.item_index]
    history = [*data.items[rows].tolist(), *(data.item_index[e.item_id] for e in known)]
    notes = [*clf.notes[rows].tolist(), *(_later_note(clf, e) for e in known)]
    expected = clf.history_text(history[-4:][::-1], notes[-4:][::-1])
    texts: list[str] = []
    predict_texts = clf.predict_texts

    def recorded(histories: list[str], *args):
        texts.extend(histories)
        return predict_texts(histories, *args)

    monkeypatch.setattr(clf, "predict_texts", recorded)
    candidates = list(data.item_ids[1:])  # every item (index 0 is padding)
    user_id = data.user_ids[user] if user is not None else "stored-only"
    predictions = predict_user(clf, user_id, candidates, later)
    assert set(texts) == {expected}
    assert [p.seen for p in predictions] == [data.item_index[i] in history for i in candidates]
    assert set(history[:-4]) - set(history[-4:]) or user is None  # some seen items are older than the text
