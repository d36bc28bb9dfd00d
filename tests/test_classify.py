"""Behaviour classification: label specs, strict-past histories, truncation, training stages, save/load, re-ranking."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec import classify
from lmrec.data.dataset import PreparedDataset
from lmrec.data.prepare import prepare
from lmrec.errors import ConfigError, DataError, RunError
from lmrec.evaluate.metrics import log_loss
from lmrec.models.cross_encoder import pair_token_lengths

GENRES = ["comedy", "drama", "war", "thriller"]
WORDS = ["toy", "story", "rating", "1", "2", "3", "4", "5", ";", "—", "|", "no", "earlier", "events", *GENRES]


@pytest.fixture(scope="module")
def tiny_bert(make_tiny_bert) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocabulary of a few words, saved as a model folder."""
    return make_tiny_bert(WORDS, max_positions=128)


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    """400 ratings of 30 users on 20 items with many tied timestamps; users like their favourite genre."""
    root = tmp_path_factory.mktemp("rated")
    rng = random.Random(3)
    items = [f"i{k},{GENRES[k % 4]} story {k},{GENRES[k % 4]}" for k in range(20)]
    (root / "items.csv").write_text("item_id,title,genre\n" + "\n".join(items) + "\n")
    rows = []
    for _ in range(400):
        user, item = rng.randrange(30), rng.randrange(20)
        rating = rng.choice([4, 5]) if item % 4 == user % 4 else rng.choice([1, 2, 3, 4])
        rows.append(f"u{user},i{item},{1000 + rng.randrange(60) * 10},{rating}")
    (root / "log.csv").write_text("user_id,item_id,timestamp,rating\n" + "\n".join(rows) + "\n")
    return prepare(
        root / "log.csv",
        root / "data",
        items=root / "items.csv",
        text_template="{title} | {genre}",
        split="temporal",
        cutoff=0.8,
        keep_repeats=True,
    )


@pytest.fixture(scope="module")
def events(rated: PreparedDataset) -> classify.EventLog:
    return classify.load_events(rated)


def config(tiny_bert: Path, **settings) -> classify.ClassifierConfig:
    base = {
        "label": "rating>=4",
        "encoder": str(tiny_bert),
        "max_length": 48,
        "history": 4,
        "max_train_examples": 64,
        "max_valid_examples": 24,
        "batch_size": 8,
        "eval_every": 4,
        "epochs": 2,
        "lr": 1e-3,
        "seed": 0,
    }
    return classify.make_config(**{**base, **settings})


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
    spec = classify.parse_label(text)
    assert (spec.kind, spec.op, spec.threshold, spec.event_type) == (kind, op, threshold, event_type)


@pytest.mark.parametrize(
    "text", ["", "rating", "rating>>4", "rating>=four", "rating=4", "rating>=nan", "type>purchase", "type=", "like"]
)
def test_bad_label_specs_are_one_sentence(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        classify.parse_label(text)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_labels_need_their_column(events: classify.EventLog) -> None:
    with pytest.raises(DataError, match="event_type column"):
        classify.event_labels(classify.parse_label("type=purchase"), events)
    with pytest.raises(ConfigError, match="not this dataset's value column"):
        classify.event_labels(classify.parse_label("price>=4"), events)
    labels = classify.event_labels(classify.parse_label("rating>=4"), events)
    assert np.array_equal(labels, (events.values >= 4).astype(np.int8))
    assert events.value_name == "rating"


def test_history_notes_show_the_value_and_its_label(events: classify.EventLog) -> None:
    rating = classify.parse_label("rating>=4")
    assert rating.note(4.0, None, True, ("liked", "disliked")) == "rated 4, liked"
    assert rating.note(3.5, None, False, ("yes", "no")) == "rated 3.5, no"
    assert rating.note(float("nan"), None, False, ("yes", "no")) == ""
    assert classify.parse_label("value<2").note(1.0, None, True, ("a", "b")) == "value 1, a"
    assert classify.parse_label("type=purchase").note(math.nan, "view", False, ("a", "b")) == "view"
    assert classify.parse_label("sampled").note(5.0, "view", True, ("a", "b")) == ""
    notes = classify.event_notes(rating, events, ("liked", "disliked"))
    assert notes[0] == f"rated {events.values[0]:g}, {'liked' if events.values[0] >= 4 else 'disliked'}"


def test_events_without_a_value_are_not_examples(events: classify.EventLog, caplog) -> None:
    values = events.values.copy()
    values[[0, 5]] = np.nan
    holed = dataclasses.replace(events, values=values)
    with caplog.at_level(logging.WARNING, logger="lmrec.classify"):
        examples = classify.build_examples(holed, classify.parse_label("rating>=4"))
    assert len(examples) == len(values) - 2 and "2 of" in caplog.text


# -- examples and histories ----------------------------------------------------------------------------


def test_histories_hold_only_strictly_earlier_events(events: classify.EventLog) -> None:
    data = events.dataset
    examples = classify.build_examples(events, classify.parse_label("rating>=4"))
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


def test_history_text_is_the_recent_strict_past_with_values(tiny_bert: Path, events: classify.EventLog) -> None:
    clf = classify.build_classifier(config(tiny_bert, history=3), events)
    data = events.dataset
    examples = classify.build_examples(events, clf.spec)
    rows = np.flatnonzero(examples.end - data.offsets[examples.user] >= 3)[:5]
    histories, candidates = clf.example_texts(examples.subset(rows))
    for row, text, candidate in zip(rows, histories, candidates, strict=True):
        end = examples.end[row]
        words = {r: "liked" if events.values[r] >= 4 else "disliked" for r in (end - 1, end - 2, end - 3)}
        expected = [f"{data.item_text[data.items[r]]} — rated {events.values[r]:g}, {w}" for r, w in words.items()]
        assert text == " ; ".join(expected)
        assert candidate == data.item_text[data.items[row]]
    first = np.flatnonzero(examples.end == data.offsets[examples.user])[:1]
    assert clf.example_texts(examples.subset(first))[0] == [classify.NO_HISTORY]


def test_past_rate_counts_only_the_strict_past(tiny_bert: Path, events: classify.EventLog) -> None:
    cfg = config(tiny_bert)
    clf = classify.build_classifier(cfg, events)
    sets = classify.example_sets(events, cfg)
    report = classify.fit_biases(clf, sets.train, sets.valid_used)
    prior = sets.train.label.mean()
    assert report["prior"] == pytest.approx(prior)
    examples = classify.build_examples(events, clf.spec)
    rates = clf.past_rate(examples)
    data = events.dataset
    for row in range(0, len(examples), 7):
        past = events.values[data.offsets[examples.user[row]] : examples.end[row]] >= 4
        assert rates[row] == pytest.approx((past.sum() + 5 * prior) / (len(past) + 5) - prior, abs=1e-6)
    off = classify.build_classifier(config(tiny_bert, past_rate=False), events)
    assert not off.past_rate(examples).any()


def test_history_features_are_computed_from_the_strict_past_only(tiny_bert: Path, events: classify.EventLog) -> None:
    cfg = config(tiny_bert)
    clf = classify.build_classifier(cfg, events)
    sets = classify.example_sets(events, cfg)
    report = classify.fit_biases(clf, sets.train, sets.valid_used)
    assert set(report["feature_weights"]) == {"past_rate", "past_residual", "text_affinity"}
    data, prior = events.dataset, sets.train.label.mean()
    item_rate = clf.model.item_rate.numpy()
    for item in (1, 5, 9):
        labels = sets.train.label[sets.train.item == item]
        assert item_rate[item] == pytest.approx((labels.sum() + 5 * prior) / (len(labels) + 5))
    examples = classify.build_examples(events, clf.spec)
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
    changed = classify.build_classifier(cfg, dataclasses.replace(events, values=values))
    changed.model.load_state_dict(clf.model.state_dict())
    changed.refresh_residuals()
    assert np.allclose(changed.features(examples.subset(np.array([row]))), features[row])
    off = classify.build_classifier(config(tiny_bert, past_residual=False, text_affinity=False), events)
    assert off.item_vectors is None and not off.features(examples)[:, 1:].any()


@pytest.mark.parametrize("user_bias", [False, True])
def test_user_biases_are_learned_only_when_asked(tiny_bert: Path, events: classify.EventLog, user_bias: bool) -> None:
    cfg = config(tiny_bert, user_bias=user_bias)
    clf = classify.build_classifier(cfg, events)
    sets = classify.example_sets(events, cfg)
    classify.fit_biases(clf, sets.train, sets.valid_used)
    known = clf.model.user_known.numpy()
    assert known[np.unique(sets.train.user)].all() == user_bias and known.any() == user_bias
    assert (clf.model.user_bias.weight[1:].abs().sum() > 0).item() == user_bias  # slot 0 is the fallback


def test_sampled_negatives_are_unseen_items_at_the_same_moment(events: classify.EventLog) -> None:
    data = events.dataset
    examples = classify.build_examples(events, classify.parse_label("sampled"), negatives=2, seed=1)
    n = len(data.items)
    assert len(examples) == 3 * n and examples.label[:n].all() and not examples.label[n:].any()
    negatives = examples.subset(np.arange(n, 3 * n))
    for user, item in zip(negatives.user, negatives.item, strict=True):
        assert item not in data.sequence(user)
    assert np.array_equal(negatives.end, np.repeat(events.history_end, 2))
    again = classify.build_examples(events, classify.parse_label("sampled"), negatives=2, seed=1)
    assert np.array_equal(again.item, examples.item)


def test_popularity_negatives_follow_the_weights_and_stay_unseen(events: classify.EventLog) -> None:
    data = events.dataset
    weights = classify.negative_weights(events, "popularity")
    train_items = data.items[data.split == 0]
    assert np.array_equal(weights, np.bincount(train_items, minlength=data.n_items + 1))
    users = np.repeat(np.arange(data.n_users), 50)
    drawn = classify.sample_unseen(events, users, np.random.default_rng(0), weights)
    assert weights[drawn].min() > 0
    assert all(item not in data.sequence(user) for user, item in zip(users, drawn, strict=True))
    only = np.zeros_like(weights)
    only[data.items[0]] = 1.0  # the one drawable item is one user 0 has seen
    with pytest.raises(DataError, match="every item that can be drawn"):
        classify.sample_unseen(events, users, np.random.default_rng(0), only)
    counts = np.bincount(drawn, minlength=data.n_items + 1)[1:]
    assert np.corrcoef(counts, weights[1:])[0, 1] > 0.3  # popular items are drawn more often


# -- training, truncation, save/load -------------------------------------------------------------------


def test_truncated_examples_are_counted_and_logged(tiny_bert: Path, events: classify.EventLog, caplog) -> None:
    clf = classify.build_classifier(config(tiny_bert, max_length=16), events)
    examples = classify.build_examples(events, clf.spec).subset(np.arange(60))
    with caplog.at_level(logging.WARNING, logger="lmrec.classify"):
        probs, truncated = clf.predict(examples)
    lengths = pair_token_lengths(clf.tokenizer, *clf.example_texts(examples))
    assert truncated == int((lengths > 16).sum()) > 0
    assert f"{truncated} of 60 examples were longer than 16 tokens and were cut" in caplog.text
    assert probs.shape == (60,) and ((probs > 0) & (probs < 1)).all()


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_training_stages_and_trainable_weights(tiny_bert: Path, events: classify.EventLog, mode: str) -> None:
    cfg = config(tiny_bert, mode=mode)
    sets = classify.example_sets(events, cfg)
    clf, report = classify.train_classifier(events, cfg, sets)
    trainable = [name for name, p in clf.model.named_parameters() if p.requires_grad]
    if mode == "lora":
        assert all("lora_" in name or name.startswith("head.") for name in trainable)
        assert any("lora_" in name for name in trainable)
    else:
        backbone = [name for name, _ in clf.model.backbone.named_parameters()]
        assert set(trainable) == {f"backbone.{n}" for n in backbone} | {"head.weight", "head.bias"}
    assert not any(p.requires_grad for p in clf.model.bias_parameters())  # fitted in stage 1, then frozen
    assert report["bias"]["l2"] in classify.BIAS_L2_GRID and report["bias"]["examples"] == len(sets.train)
    encoder = report["encoder"]
    assert encoder["steps"] == 2 * 8 and encoder["checks"][-1]["step"] == 16
    best = min([encoder["best_valid_logloss"], *(c["valid_logloss"] for c in encoder["checks"])])
    assert encoder["best_valid_logloss"] == best


def test_a_few_steps_lower_the_training_loss(tiny_bert: Path, events: classify.EventLog) -> None:
    cfg = config(tiny_bert, mode="full", max_valid_examples=0, bias_l2=10.0, epochs=8, head_lr=1e-2, warmup=0.0)
    sets = classify.example_sets(events, cfg)
    clf = classify.build_classifier(cfg, events)
    classify.fit_biases(clf, sets.train, sets.valid_used, cfg.bias_l2)
    before, _ = clf.predict(sets.train_used)
    classify.fit_encoder(clf, sets.train_used, sets.valid_used)
    after, _ = clf.predict(sets.train_used)
    labels = sets.train_used.label
    assert log_loss(labels, after) < log_loss(labels, before) - 0.01


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_save_and_load_give_identical_probabilities(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, mode: str
) -> None:
    cfg = config(tiny_bert, mode=mode, epochs=1, max_test_examples=40)
    metrics = classify.train_run(rated.path, tmp_path / "run", cfg)
    assert set(metrics["test"]) == set(classify.METRICS) == set(metrics["baseline"])
    assert metrics["examples"]["test_used"] == 40 and metrics["examples"]["test_subsampled"]
    folder = tmp_path / "run" / "model"
    assert (folder / "head.pt").is_file()
    assert (folder / "adapter").is_dir() if mode == "lora" else (folder / "encoder" / "config.json").is_file()
    assert not (folder / "encoder").exists() if mode == "lora" else not (folder / "adapter").exists()
    saved = classify.load_predictions(tmp_path / "run")
    loaded = classify.load_run(tmp_path / "run")
    examples = classify.Examples(saved["user"], saved["item"], saved["end"], saved["label"], saved["label"] * 0)
    probs, _ = loaded.predict(examples)
    np.testing.assert_array_equal(probs, saved["prob"])
    np.testing.assert_array_equal(loaded.bias_probabilities(examples), saved["baseline"])


def test_runs_refuse_another_dataset(tiny_bert: Path, rated: PreparedDataset, tmp_path: Path) -> None:
    classify.train_run(rated.path, tmp_path / "run", config(tiny_bert, epochs=1, max_test_examples=10))
    other = prepare(rated.path.parent / "log.csv", tmp_path / "other", split="temporal", cutoff=0.5)
    with pytest.raises(RunError, match="another dataset preparation"):
        classify.load_run(tmp_path / "run", other.path)


def test_a_run_being_trained_is_locked_and_a_failed_one_leaves_no_folder(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.registry.run import RunDir

    cfg = config(tiny_bert, epochs=1, max_test_examples=10)
    with RunDir(tmp_path / "run").lock(), pytest.raises(RunError, match="in use by another lmrec process"):
        classify.train_run(rated.path, tmp_path / "run", cfg)

    def fail(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(classify, "train_classifier", fail)
    with pytest.raises(RuntimeError):
        classify.train_run(rated.path, tmp_path / "fresh", cfg)
    assert not (tmp_path / "fresh").exists()


def test_a_crash_before_the_metrics_leaves_no_finished_run(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.registry.run import RunDir

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(RunDir, "write_metrics", crash)
    with pytest.raises(OSError, match="disk full"):
        classify.train_run(rated.path, tmp_path / "run", config(tiny_bert, epochs=1, max_test_examples=10))
    info = tmp_path / "run" / "run.json"
    assert not info.is_file() or json.loads(info.read_text())["state"] != "finished"


# -- prediction, re-ranking, intervals -----------------------------------------------------------------


def test_rerank_orders_candidates_by_probability(tiny_bert: Path, events: classify.EventLog) -> None:
    clf = classify.build_classifier(config(tiny_bert), events)
    with torch.no_grad():
        clf.model.head.weight.normal_()
        clf.model.feature_weights.fill_(1.0)
        clf.model.rate_prior.fill_(0.5)
    data = events.dataset
    users = np.array([0, 1])
    positions = np.array([3, 0])
    rows = classify.history_rows(data, users, positions, 5)
    assert (rows[1] == -1).all() and rows[0].tolist() == [-1, -1, *range(data.offsets[0], data.offsets[0] + 3)]
    histories = np.where(rows >= 0, data.items[np.maximum(rows, 0)], 0)
    candidates = np.array([[1, 2, 3, 0], [4, 0, 5, 6]])
    probs = classify.rerank_probabilities(clf, users, histories, candidates, rows)
    assert probs.shape == (2, 4) and probs[0, 3] == 0 and probs[1, 1] == 0
    expected, _ = clf.predict_texts(
        [clf.rows_text(np.arange(data.offsets[0] + 2, data.offsets[0] - 1, -1))],
        [clf.item_texts[2]],
        users[:1],
        candidates[0, 1:2],
        clf.features(classify.Examples(users[:1], candidates[0, 1:2], rows[0, -1:] + 1, users[:1] * 0, users[:1] * 0)),
    )
    assert probs[0, 1] == pytest.approx(expected[0])
    ordered, sorted_probs = classify.rerank(clf, users, histories, candidates, rows)
    assert ordered[0, -1] == 0 and ordered[1, -1] == 0
    assert (np.diff(sorted_probs[:, :3], axis=1) <= 0).all()
    assert sorted(ordered[1].tolist()) == sorted(candidates[1].tolist())


def test_blended_rerank_order_moves_from_the_first_stage_to_the_classifier() -> None:
    candidates = np.array([[5, 6, 7, 0]])
    first = np.array([[3.0, 2.0, 1.0, 0.0]])
    probs = np.array([[0.1, 0.5, 0.9, 0.0]])
    order = lambda *args: candidates[0, classify.rerank_order(candidates, probs, *args)[0]].tolist()  # noqa: E731
    assert order() == [7, 6, 5, 0]  # probability alone
    assert order(first, 0.0) == [5, 6, 7, 0]  # the first stage's order
    # keys 3 - 2.197w, 2, 1 + 2.197w: below w = 0.455 the first stage's order holds, above it the classifier's
    assert order(first, 0.4) == [5, 6, 7, 0]
    assert order(first, 0.5) == [7, 6, 5, 0]


def test_predict_user_uses_the_full_history(tiny_bert: Path, events: classify.EventLog) -> None:
    clf = classify.build_classifier(config(tiny_bert), events)
    data = events.dataset
    user_id = data.user_ids[2]
    seen_item = data.item_ids[data.sequence(2)[0]]
    predictions = classify.predict_user(clf, user_id, [seen_item, data.item_ids[1]])
    assert [p.item_id for p in predictions] == [seen_item, data.item_ids[1]]
    assert predictions[0].seen and all(0 < p.probability < 1 for p in predictions)
    with pytest.raises(DataError, match="user 'nobody'"):
        classify.predict_user(clf, "nobody", [seen_item])
    with pytest.raises(DataError, match="item 'nothing'"):
        classify.predict_user(clf, user_id, ["nothing"])


@dataclasses.dataclass(frozen=True)
class Later:
    item_id: str
    type: str | None
    value: float | None


@pytest.mark.parametrize(("user", "n_later"), [(2, 0), (2, 3), (2, 12), (None, 3)])
def test_predict_user_reads_the_latest_events_and_marks_the_whole_history_seen(
    tiny_bert: Path, events: classify.EventLog, monkeypatch: pytest.MonkeyPatch, user: int | None, n_later: int
) -> None:
    """The history text is that of the last `history` events of the dataset's and the later ones (unknown
    items skipped); `seen` covers the whole history, also events older than the text shows."""
    clf = classify.build_classifier(config(tiny_bert), events)
    data = events.dataset
    rows = np.arange(data.offsets[user], data.offsets[user + 1]) if user is not None else np.zeros(0, np.int64)
    later = [Later(data.item_ids[1 + k % 5], "rating", float(1 + k % 5)) for k in range(n_later)]
    later[1:1] = [Later("unknown", "view", None)] if later else []
    known = [e for e in later if e.item_id in data.item_index]
    history = [*data.items[rows].tolist(), *(data.item_index[e.item_id] for e in known)]
    notes = [*clf.notes[rows].tolist(), *(classify._later_note(clf, e) for e in known)]
    expected = clf.history_text(history[-4:][::-1], notes[-4:][::-1])
    texts: list[str] = []
    predict_texts = clf.predict_texts

    def recorded(histories: list[str], *args):
        texts.extend(histories)
        return predict_texts(histories, *args)

    monkeypatch.setattr(clf, "predict_texts", recorded)
    candidates = list(data.item_ids[1:])  # every item (index 0 is padding)
    user_id = data.user_ids[user] if user is not None else "stored-only"
    predictions = classify.predict_user(clf, user_id, candidates, later)
    assert set(texts) == {expected}
    assert [p.seen for p in predictions] == [data.item_index[i] in history for i in candidates]
    assert set(history[:-4]) - set(history[-4:]) or user is None  # some seen items are older than the text


def test_intervals_hold_the_point_estimates() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = np.clip(labels * 0.4 + rng.random(300) * 0.6, 0, 1)
    weak = rng.random(300)
    intervals = classify.classification_intervals(labels, {"good": good, "weak": weak}, "weak", n_resamples=200)
    assert set(intervals) == {"good", "weak", "good - weak"}
    for name, metrics in intervals.items():
        for metric, interval in metrics.items():
            assert interval.low <= interval.mean <= interval.high, (name, metric)
    auc = intervals["good - weak"]["auc"]
    assert auc.low > 0 and auc.mean == pytest.approx(intervals["good"]["auc"].mean - intervals["weak"]["auc"].mean)
