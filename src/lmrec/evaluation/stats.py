"""Bootstrap confidence intervals of metric means and paired bootstrap tests between runs.

Both work on per-example values (one per evaluation target), so a difference between two models is
tested on the same targets rather than on two independent means. When `groups` (the user of every
example, `EvalResult.users`) has a user with several examples, whole users are resampled (a cluster
bootstrap: each resample's mean is its examples' total over their number), since one user's examples are
not independent of each other; with one example per user this is exactly the plain bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmrec.errors import RunError
from lmrec.evaluation.evaluator import EvalResult

DEFAULT_RESAMPLES = 1000
_MAX_DRAWS = 4_000_000  # resampled values held in memory at once


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PairedTest:
    """Mean per-example difference (second run minus first), its interval and two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        p_value = "p<0.001" if self.p_value < 0.001 else f"p={self.p_value:.3f}"
        return f"{self.delta:+.4f} [{self.low:+.3f}, {self.high:+.3f}] {p_value}"


def _values(values: np.ndarray) -> np.ndarray:
    """A non-empty, NaN-free 1-D float array."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or np.isnan(array).any():
        raise ValueError("bootstrap needs a non-empty 1-D array of per-example values without NaN")
    return array


def _check_level(level: float) -> None:
    """Reject confidence levels outside (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")


def _clusters(groups: np.ndarray | None, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-group totals and sizes of `values`; None when there are no groups or each example is its own."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != values.shape:
        raise ValueError(f"groups must give one group per value, got {groups.shape} for {values.shape}")
    _, index = np.unique(groups, return_inverse=True)
    sizes = np.bincount(index)
    if sizes.size == values.size:
        return None
    return np.bincount(index, weights=values), sizes.astype(np.float64)


def bootstrap_means(
    values: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, groups: np.ndarray | None = None
) -> np.ndarray:
    """Means of `n_resamples` resamples with replacement of `values` (of whole groups when `groups` has
    repeated groups), drawn in memory-bounded chunks."""
    array = _values(values)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    clusters = _clusters(groups, array)
    n = array.size if clusters is None else clusters[1].size
    per_chunk = max(1, _MAX_DRAWS // n)
    chunks = []
    for done in range(0, n_resamples, per_chunk):
        draws = rng.integers(0, n, size=(min(per_chunk, n_resamples - done), n))
        if clusters is None:
            chunks.append(array[draws].mean(axis=1))
        else:
            totals, sizes = clusters
            chunks.append(totals[draws].sum(axis=1) / sizes[draws].sum(axis=1))
    return np.concatenate(chunks)


def bootstrap_ci(
    values: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Interval:
    """Percentile-bootstrap interval of the mean of `values` (resampling whole `groups` when given)."""
    _check_level(level)
    means = bootstrap_means(values, n_resamples, seed, groups)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(np.mean(values)), float(low), float(high), level)


def paired_test(
    deltas: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> PairedTest:
    """Paired bootstrap of per-example differences: mean, percentile interval and two-sided p-value.

    The p-value is the share of resampled means, shifted to a null mean of 0, at least as far from 0 as
    the observed mean (with the +1 correction, so it is never exactly 0). `groups` as in `bootstrap_means`.
    """
    _check_level(level)
    means = bootstrap_means(deltas, n_resamples, seed, groups)
    observed = float(np.mean(deltas))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    extreme = int((np.abs(means - observed) >= abs(observed)).sum())
    p_value = min(1.0, (extreme + 1) / (means.size + 1))
    return PairedTest(observed, float(low), float(high), p_value, int(np.size(deltas)), level)


def check_same_targets(first: EvalResult, second: EvalResult) -> None:
    """Raise RunError saying how two results differ unless they ranked the same targets the same way."""
    problems = []
    if first.split != second.split:
        problems.append(f"split {first.split} vs {second.split}")
    if first.fingerprint and second.fingerprint and first.fingerprint != second.fingerprint:
        problems.append(f"dataset fingerprint {first.fingerprint} vs {second.fingerprint}")
    if (first.sampled_negatives, first.mask_history) != (second.sampled_negatives, second.mask_history):
        problems.append(f"protocol '{first.protocol}' vs '{second.protocol}'")
    if len(first) != len(second):
        problems.append(f"{len(first)} vs {len(second)} targets")
    else:
        differs = first.users != second.users
        differs |= (first.items != second.items) | (first.positions != second.positions)
        if differs.any():
            i = int(np.argmax(differs))
            problems.append(
                f"{int(differs.sum())} targets differ, first at example {i}: "
                f"user {first.users[i]} item {first.items[i]} "
                f"vs user {second.users[i]} item {second.items[i]}"
            )
    if problems:
        raise RunError("the two evaluations are not on the same targets: " + "; ".join(problems) + ".")


def paired_deltas(first: EvalResult, second: EvalResult, metric: str) -> np.ndarray:
    """Per-example `second - first` of `metric`, after checking both ranked the same targets."""
    check_same_targets(first, second)
    return second.per_example(metric) - first.per_example(metric)


def pooled_deltas(pairs: Sequence[tuple[EvalResult, EvalResult]], metric: str) -> np.ndarray:
    """Per-example deltas of several (first, second) seed pairs, concatenated for one pooled test.

    The resampling then treats every (seed, target) as independent; when the S pairs all rank the same N
    targets, `seed_averaged_deltas` resamples targets with their seed-averaged delta instead.
    """
    if not pairs:
        raise ValueError("pooling needs at least one pair of results")
    return np.concatenate([paired_deltas(first, second, metric) for first, second in pairs])


def seed_averaged_deltas(pairs: Sequence[tuple[EvalResult, EvalResult]], metric: str) -> np.ndarray:
    """Per-target `second - first` of `metric`, averaged over seed pairs that all rank the same targets:
    what a paired test over seeds resamples (see `seed_averaged`; pass the targets' users as `groups`)."""
    return pooled_deltas(pairs, metric).reshape(len(pairs), -1).mean(axis=0)


def seed_averaged(results: Sequence[EvalResult], metric: str) -> np.ndarray:
    """Per-target `metric` averaged over several seeds' results on the same targets.

    Seeds share their targets, so resampling targets with their seed-averaged value gives the interval of
    the seed-averaged mean; concatenating the seeds would treat each (seed, target) as independent and
    make the interval too narrow. Pass `results[0].users` as the `groups` of the interval.
    """
    if not results:
        raise ValueError("averaging over seeds needs at least one result")
    for other in results[1:]:
        check_same_targets(results[0], other)
    return np.mean([result.per_example(metric) for result in results], axis=0)


def compare(
    first: EvalResult,
    second: EvalResult,
    metric: str,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap test of `second` against `first` on `metric`, resampling users (see the module)."""
    return paired_test(paired_deltas(first, second, metric), n_resamples, level, seed, groups=first.users)
