"""Ranking and behaviour-classification metrics, vectorised over examples.

Ranks are 0-based: rank r means r items were ranked above the relevant one. A 1-D rank vector holds one
relevant item per example; a 2-D `[N, R]` matrix holds the ranks of up to R relevant items per example
(e.g. a user's whole temporal test window), with -1 filling the unused slots. With one relevant item,
Recall@K equals HR@K and MAP@K equals MRR@K.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

RankMetric = Callable[[np.ndarray, int], np.ndarray]


def _rank_matrix(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ranks `[N, R]` int64, valid `[N, R]` bool) from a 1-D or 2-D rank array; -1 marks unused slots."""
    matrix = np.asarray(ranks)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise ValueError(f"ranks must be 1-D or 2-D, got shape {matrix.shape}")
    matrix = matrix.astype(np.int64, copy=False)
    valid = matrix >= 0
    if matrix.shape[0] and not valid.any(axis=1).all():
        raise ValueError("every example needs at least one relevant item (a rank >= 0)")
    return matrix, valid


def _check_k(k: int) -> None:
    """Reject cut-offs that are not positive integers."""
    if int(k) != k or k < 1:
        raise ValueError(f"K must be a positive integer, got {k}")


def _hits(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ranks, hit mask `[N, R]`, number of relevant items `[N]`) at cut-off k."""
    _check_k(k)
    matrix, valid = _rank_matrix(ranks)
    return matrix, valid & (matrix < k), valid.sum(axis=1)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example HR@K: 1 when any relevant item is in the top K."""
    _, hit, _ = _hits(ranks, k)
    return hit.any(axis=1).astype(np.float64)


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example Recall@K: the fraction of the relevant items that are in the top K."""
    _, hit, n_relevant = _hits(ranks, k)
    return hit.sum(axis=1) / n_relevant


def precision_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example Precision@K: relevant items in the top K, divided by K."""
    _, hit, _ = _hits(ranks, k)
    return hit.sum(axis=1) / k


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example NDCG@K with binary relevance: sum of 1/log2(r+2) over hits, over the ideal DCG."""
    matrix, hit, n_relevant = _hits(ranks, k)
    gains = np.where(hit, 1.0 / np.log2(np.where(hit, matrix, 0) + 2.0), 0.0).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    return gains / ideal[np.minimum(n_relevant, k)]


def mrr_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example MRR@K: 1/(r+1) for the best-ranked relevant item when it is in the top K, else 0."""
    matrix, hit, _ = _hits(ranks, k)
    best = np.where(hit, matrix, k).min(axis=1)
    return np.where(best < k, 1.0 / (best + 1.0), 0.0)


def map_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-example AP@K: mean over hits of the precision at the hit's position, over min(#relevant, K)."""
    matrix, hit, n_relevant = _hits(ranks, k)
    ordered = np.sort(np.where(hit, matrix, k), axis=1)  # hits first, ascending; misses become k
    found = np.arange(1, ordered.shape[1] + 1)  # relevant items at or above each sorted hit
    precisions = np.where(ordered < k, found / (ordered + 1.0), 0.0)
    return precisions.sum(axis=1) / np.minimum(n_relevant, k)


RANKING_METRICS: dict[str, RankMetric] = {
    "hr": hit_rate_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
}
"""Per-example ranking metrics by name; a metric's full name is `name@K`, e.g. "ndcg@10"."""


def parse_metric(name: str) -> tuple[str, int]:
    """Split a metric name such as "ndcg@10" into ("ndcg", 10)."""
    base, sep, cutoff = name.partition("@")
    if not sep or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"metric names look like 'ndcg@10', got {name!r}")
    return base, int(cutoff)


def ranking_metric(name: str, ranks: np.ndarray) -> np.ndarray:
    """Per-example values of a ranking metric given by its full name, e.g. "hr@10"."""
    base, k = parse_metric(name)
    if base not in RANKING_METRICS:
        known = ", ".join(RANKING_METRICS)
        raise ValueError(f"{name!r} is not a per-example ranking metric; known: {known} (as name@K)")
    return RANKING_METRICS[base](ranks, k)


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int], prefix: str = "") -> dict[str, float]:
    """Means of every ranking metric at every K, named like "hr@10" (with an optional prefix)."""
    return {
        f"{prefix}{base}@{k}": float(fn(ranks, k).mean()) if len(ranks) else float("nan")
        for k in ks
        for base, fn in RANKING_METRICS.items()
    }


def coverage_at_k(topk: np.ndarray, n_items: int, k: int) -> float:
    """Fraction of the real items (1..n_items) that appear in at least one top-K list; id 0 is ignored."""
    _check_k(k)
    shown = np.bincount(np.asarray(topk)[:, :k].ravel(), minlength=n_items + 1)[1:]
    return float((shown > 0).sum() / n_items)


def popularity_at_k(topk: np.ndarray, item_counts: np.ndarray, k: int, normalise: bool = False) -> float:
    """Mean training-interaction count of the recommended items (id 0 slots skipped).

    With `normalise`, counts are divided by the most popular item's count, so 1.0 means "always the top item".
    """
    _check_k(k)
    shown = np.asarray(topk)[:, :k]
    real = shown > 0
    counts = np.asarray(item_counts, dtype=np.float64)
    per_list = np.where(real, counts[shown], 0.0).sum(axis=1) / np.maximum(real.sum(axis=1), 1)
    value = float(per_list.mean()) if len(per_list) else float("nan")
    return float(value / counts.max()) if normalise and counts.max() > 0 else value


# -- behaviour classification ------------------------------------------------------------------------


def _labels(y_true: np.ndarray) -> np.ndarray:
    """Binary labels as bool, rejecting anything that is not 0/1."""
    labels = np.asarray(y_true)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be a 1-D array of 0/1 values")
    return labels.astype(bool)


def _confusion(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(true positives, false positives, false negatives, true negatives) with `score >= threshold`."""
    labels = _labels(y_true)
    predicted = np.asarray(y_score) >= threshold
    if predicted.shape != labels.shape:
        raise ValueError(f"{labels.shape[0]} labels but {predicted.shape} scores")
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return tp, fp, fn, labels.size - tp - fp - fn


def accuracy(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of examples whose thresholded prediction equals the label."""
    tp, _, _, tn = _confusion(y_true, y_score, threshold)
    return (tp + tn) / len(y_true)


def precision(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Of the predicted positives, the fraction that are positive (0 when nothing is predicted positive)."""
    tp, fp, _, _ = _confusion(y_true, y_score, threshold)
    return tp / (tp + fp) if tp + fp else 0.0


def recall(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Of the positives, the fraction predicted positive (0 when there are no positives)."""
    tp, _, fn, _ = _confusion(y_true, y_score, threshold)
    return tp / (tp + fn) if tp + fn else 0.0


def f1(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    tp, fp, fn, _ = _confusion(y_true, y_score, threshold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` in ascending order, tied values sharing the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.concatenate([starts[1:], [values.size]])
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC from the Mann-Whitney statistic: P(positive scores above negative), ties counting half."""
    labels = _labels(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.shape != labels.shape or np.isnan(scores).any():
        raise ValueError("ROC-AUC needs one non-NaN score per label")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if not n_pos or not n_neg:
        raise ValueError("ROC-AUC needs both positive and negative examples")
    rank_sum = average_ranks(scores)[labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 - eps] so one sure miss stays finite."""
    labels = _labels(y_true)
    probs = np.asarray(y_prob, dtype=np.float64)
    if probs.shape != labels.shape or not ((probs >= 0) & (probs <= 1)).all():
        raise ValueError("log-loss needs one probability in [0, 1] per label")
    probs = np.clip(probs, eps, 1.0 - eps)
    return float(-np.where(labels, np.log(probs), np.log1p(-probs)).mean())


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (at `threshold`), AUC and log-loss of predicted probabilities."""
    return {
        "accuracy": accuracy(y_true, y_prob, threshold),
        "precision": precision(y_true, y_prob, threshold),
        "recall": recall(y_true, y_prob, threshold),
        "f1": f1(y_true, y_prob, threshold),
        "auc": roc_auc(y_true, y_prob),
        "logloss": log_loss(y_true, y_prob),
    }
