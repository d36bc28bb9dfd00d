"""The runs a report shows, loaded and checked once: each run's record, metrics, saved test ranking and model,
and the facts about their shared dataset that several sections use (training popularity and its tiers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.data.dataset import TRAIN, PreparedDataset
from lmrec.errors import RunError
from lmrec.evaluation.evaluator import EvalResult
from lmrec.evaluation.report.segments import popularity_tiers
from lmrec.evaluation.stats import check_same_targets
from lmrec.evaluation.tables import short_names
from lmrec.inference.recommender import Recommender
from lmrec.registry.run import RunDir, read_json

HEADLINE_K = 10  # the cut-off of the plots, segments and popularity figures (lower when a run saved fewer)


@dataclass
class ReportRun:
    """One finished training run: its label in the report, metrics.json, test ranking and (loaded when first
    used) model."""

    label: str
    path: Path
    metrics: dict[str, Any]
    result: EvalResult

    @cached_property
    def recommender(self) -> Recommender:
        """The run's model and dataset, ready to recommend."""
        return Recommender.load(self.path)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of training: epoch, loss and (when validated) metrics; none for a model fitted
        without epochs, such as pop, whose one record holds only its validation metrics."""
        return [record for record in self.metrics.get("history") or [] if {"epoch", "loss"} <= set(record)]


def load_run(path: str | Path, label: str) -> ReportRun:
    """A run folder written by `lmrec train` (its model not loaded yet), refused in one sentence when it is
    anything else."""
    run = RunDir(path)
    if "dataset" not in run.info():
        raise RunError(f"{path} is a pre-training checkpoint, not a trained run; a report needs runs of `lmrec train`.")
    ranks = run.ranks_file("test")
    if not (run.metrics_file.is_file() and ranks.is_file()):
        raise RunError(
            f"run {path} has no saved test evaluation (metrics.json and ranks/test.npz); a report needs a run "
            "that `lmrec train` finished."
        )
    metrics = read_json(run.metrics_file, "the run's metrics")
    return ReportRun(label, Path(path), metrics, EvalResult.load(ranks))


class ReportInput:
    """The runs of one report, which ranked the same test targets of one prepared dataset."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        if not paths:
            raise RunError("a report needs at least one run directory.")
        labels = short_names([str(path) for path in paths])
        self.runs = [load_run(path, label) for path, label in zip(paths, labels, strict=True)]
        for other in self.runs[1:]:
            check_same_targets(self.runs[0].result, other.result)

    @property
    def first(self) -> ReportRun:
        """The run every other run is compared with."""
        return self.runs[0]

    @property
    def dataset(self) -> PreparedDataset:
        """The prepared dataset all the runs were trained and evaluated on."""
        return self.first.recommender.dataset

    @cached_property
    def k(self) -> int:
        """The cut-off of the headline figures: 10, or the shortest top-K list a run saved when shorter."""
        return min(HEADLINE_K, *(run.result.topk.shape[1] for run in self.runs))

    @property
    def headline(self) -> list[str]:
        """The metrics of the plots and segments: HR and NDCG at the headline cut-off."""
        return [f"hr@{self.k}", f"ndcg@{self.k}"]

    @cached_property
    def counts(self) -> np.ndarray:
        """Training events of every item id (index 0, padding, is 0): the popularity every figure uses."""
        dataset = self.dataset
        return np.bincount(dataset.items[dataset.split == TRAIN], minlength=dataset.n_items + 1)

    @cached_property
    def tiers(self) -> np.ndarray:
        """Popularity tier of every item id (see `segments.popularity_tiers`)."""
        return popularity_tiers(self.counts)
