"""Bootstrap intervals of classification metrics, paired against a reference."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.evaluation.classification import classification_intervals


def test_intervals_hold_the_point_estimates() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = np.clip(labels * 0.4 + rng.random(300) * 0.6, 0, 1)
    weak = rng.random(300)
    intervals = classification_intervals(labels, {"good": good, "weak": weak}, "weak", n_resamples=200)
    assert set(intervals) == {"good", "weak", "good - weak"}
    for name, metrics in intervals.items():
        for metric, interval in metrics.items():
            assert interval.low <= interval.mean <= interval.high, (name, metric)
    auc = intervals["good - weak"]["auc"]
    assert auc.low > 0 and auc.mean == pytest.approx(intervals["good"]["auc"].mean - intervals["weak"]["auc"].mean)
