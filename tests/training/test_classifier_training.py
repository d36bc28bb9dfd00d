"""Training the behaviour classifier: both stages, trainable weights, save/load, locked and failed runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifier_helpers import config
from lmrec.data.dataset import PreparedDataset
from lmrec.data.labels import EventLog, Examples, example_sets
from lmrec.errors import RunError
from lmrec.evaluation.classification import METRICS
from lmrec.evaluation.metrics import log_loss
from lmrec.inference.classifier import build_classifier, load_predictions, load_run
from lmrec.training import classifier as training_classifier
from lmrec.training.classifier import BIAS_L2_GRID, fit_biases, fit_encoder, train_classifier, train_run


@pytest.mark.parametrize("user_bias", [False, True])
def test_user_biases_are_learned_only_when_asked(tiny_bert: Path, events: EventLog, user_bias: bool) -> None:
    cfg = config(tiny_bert, user_bias=user_bias)
    clf = build_classifier(cfg, events)
    sets = example_sets(events, cfg)
    fit_biases(clf, sets.train, sets.valid_used)
    known = clf.model.user_known.numpy()
    assert known[np.unique(sets.train.user)].all() == user_bias and known.any() == user_bias
    assert (clf.model.user_bias.weight[1:].abs().sum() > 0).item() == user_bias  # slot 0 is the fallback


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_training_stages_and_trainable_weights(tiny_bert: Path, events: EventLog, mode: str) -> None:
    cfg = config(tiny_bert, mode=mode)
    sets = example_sets(events, cfg)
    clf, report = train_classifier(events, cfg, sets)
    trainable = [name for name, p in clf.model.named_parameters() if p.requires_grad]
    if mode == "lora":
        assert all("lora_" in name or name.startswith("head.") for name in trainable)
        assert any("lora_" in name for name in trainable)
    else:
        backbone = [name for name, _ in clf.model.backbone.named_parameters()]
        assert set(trainable) == {f"backbone.{n}" for n in backbone} | {"head.weight", "head.bias"}
    assert not any(p.requires_grad for p in clf.model.bias_parameters())  # fitted in stage 1, then frozen
    assert report["bias"]["l2"] in BIAS_L2_GRID and report["bias"]["examples"] == len(sets.train)
    encoder = report["encoder"]
    assert encoder["steps"] == 2 * 8 and encoder["checks"][-1]["step"] == 16
    best = min([encoder["best_valid_logloss"], *(c["logloss"] for c in encoder["checks"])])
    assert encoder["best_valid_logloss"] == best


def test_a_few_steps_lower_the_training_loss(tiny_bert: Path, events: EventLog) -> None:
    cfg = config(tiny_bert, mode="full", max_valid_examples=0, bias_l2=10.0, epochs=8, head_lr=1e-2, warmup=0.0)
    sets = example_sets(events, cfg)
    clf = build_classifier(cfg, events)
    fit_biases(clf, sets.train, sets.valid_used, cfg.bias_l2)
    before, _ = clf.predict(sets.train_used)
    fit_encoder(clf, sets.train_used, sets.valid_used)
    after, _ = clf.predict(sets.train_used)
    labels = sets.train_used.label
    assert log_loss(labels, after) < log_loss(labels, before) - 0.01


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_save_and_load_give_identical_probabilities(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, mode: str
) -> None:
    cfg = config(tiny_bert, mode=mode, epochs=1, max_test_examples=40)
    metrics = train_run(rated.path, tmp_path / "run", cfg)
    assert set(metrics["test"]) == set(METRICS) == set(metrics["baseline"])
    assert metrics["examples"]["test_used"] == 40 and metrics["examples"]["test_subsampled"]
    folder = tmp_path / "run" / "model"
    assert (folder / "head.pt").is_file()
    assert (folder / "adapter").is_dir() if mode == "lora" else (folder / "encoder" / "config.json").is_file()
    assert not (folder / "encoder").exists() if mode == "lora" else not (folder / "adapter").exists()
    saved = load_predictions(tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    examples = Examples(saved["user"], saved["item"], saved["end"], saved["label"], saved["label"] * 0)
    probs, _ = loaded.predict(examples)
    np.testing.assert_array_equal(probs, saved["prob"])
    np.testing.assert_array_equal(loaded.bias_probabilities(examples), saved["baseline"])


def test_a_run_being_trained_is_locked_and_a_failed_one_leaves_no_folder(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.registry.run import RunDir

    cfg = config(tiny_bert, epochs=1, max_test_examples=10)
    with RunDir(tmp_path / "run").lock(), pytest.raises(RunError, match="in use by another lmrec process"):
        train_run(rated.path, tmp_path / "run", cfg)

    def fail(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(training_classifier, "train_classifier", fail)
    with pytest.raises(RuntimeError):
        train_run(rated.path, tmp_path / "fresh", cfg)
    assert not (tmp_path / "fresh").exists()


def test_a_crash_before_the_metrics_leaves_no_finished_run(
    tiny_bert: Path, rated: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.registry.run import RunDir

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(RunDir, "write_metrics", crash)
    with pytest.raises(OSError, match="disk full"):
        train_run(rated.path, tmp_path / "run", config(tiny_bert, epochs=1, max_test_examples=10))
    info = tmp_path / "run" / "run.json"
    assert not info.is_file() or json.loads(info.read_text())["state"] != "finished"
