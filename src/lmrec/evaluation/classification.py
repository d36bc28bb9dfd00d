"""Evaluation of behaviour classifiers: bootstrap intervals of every classification metric, paired against a
reference, and the intervals of a classifier run's saved test predictions against its bias baseline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lmrec.evaluation.metrics import classification_metrics
from lmrec.evaluation.stats import Interval
from lmrec.inference.classifier import load_predictions

METRICS = ("accuracy", "precision", "recall", "f1", "auc", "logloss")


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
