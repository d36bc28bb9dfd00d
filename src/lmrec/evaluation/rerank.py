"""Second-stage re-ranking: re-order a first stage's top-K and recompute every target's rank."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lmrec.evaluation.evaluator import EvalResult
from lmrec.evaluation.metrics import ranking_metrics


def reranked_ranks(ranks: np.ndarray, targets: np.ndarray, reordered: np.ndarray) -> np.ndarray:
    """New 0-based ranks after the first `K = reordered.shape[1]` places were re-ordered.

    A target inside the first stage's top-K takes its place in the new order; a target outside keeps its
    rank, since re-ranking only permutes the top-K.
    """
    top = reordered.shape[1]
    inside = ranks < top
    found = reordered == targets[:, None]
    new = ranks.copy()
    new[inside] = found[inside].argmax(1)
    return new


def rerank_result(result: EvalResult, reordered: np.ndarray) -> EvalResult:
    """An EvalResult whose top-K (K = reordered.shape[1]) is `reordered`, with ranks and metrics recomputed."""
    ranks = reranked_ranks(result.ranks, result.items, reordered)
    topk = result.topk.copy()
    topk[:, : reordered.shape[1]] = reordered
    metrics = ranking_metrics(ranks, result.ks, result.prefix)
    return replace(result, ranks=ranks, topk=topk, metrics=metrics)
