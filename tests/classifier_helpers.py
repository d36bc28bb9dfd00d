"""Shared pieces of the behaviour-classifier tests (data, models, training, inference): the words of the tiny
BERT, the genres of the rated log (its fixtures are in conftest.py), and a small, fast classifier config."""

from __future__ import annotations

from pathlib import Path

from lmrec.models.classifier import ClassifierConfig, make_config

GENRES = ["comedy", "drama", "war", "thriller"]
WORDS = ["toy", "story", "rating", "1", "2", "3", "4", "5", ";", "—", "|", "no", "earlier", "events", *GENRES]


def config(tiny_bert: Path, **settings) -> ClassifierConfig:
    """A small, fast config on the tiny BERT (rating >= 4, a few dozen examples); `settings` override it."""
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
    return make_config(**{**base, **settings})
