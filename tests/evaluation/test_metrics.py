"""Hand-computed checks of the ranking and classification metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmrec.evaluation.metrics import (
    accuracy,
    average_ranks,
    classification_metrics,
    coverage_at_k,
    f1,
    hit_rate_at_k,
    log_loss,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    popularity_at_k,
    precision,
    precision_at_k,
    ranking_metric,
    ranking_metrics,
    recall,
    recall_at_k,
    roc_auc,
)

RANKS = np.array([0, 2, 10, 4])


def test_single_target_metrics_at_10_by_hand() -> None:
    np.testing.assert_allclose(hit_rate_at_k(RANKS, 10), [1, 1, 0, 1])
    np.testing.assert_allclose(ndcg_at_k(RANKS, 10), [1.0, 0.5, 0.0, 1 / math.log2(6)])
    np.testing.assert_allclose(mrr_at_k(RANKS, 10), [1.0, 1 / 3, 0.0, 1 / 5])
    np.testing.assert_allclose(precision_at_k(RANKS, 10), [0.1, 0.1, 0.0, 0.1])
    np.testing.assert_allclose(recall_at_k(RANKS, 10), hit_rate_at_k(RANKS, 10))
    np.testing.assert_allclose(map_at_k(RANKS, 10), mrr_at_k(RANKS, 10))


def test_single_target_metrics_at_small_k() -> None:
    np.testing.assert_allclose(hit_rate_at_k(RANKS, 3), [1, 1, 0, 0])
    np.testing.assert_allclose(ndcg_at_k(RANKS, 3), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(mrr_at_k(RANKS, 1), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(precision_at_k(RANKS, 5), [0.2, 0.2, 0.0, 0.2])


def test_rank_equal_to_k_is_a_miss() -> None:
    assert ndcg_at_k(np.array([10]), 10)[0] == 0.0
    assert hit_rate_at_k(np.array([9]), 10)[0] == 1.0


def test_several_relevant_items_by_hand() -> None:
    ranks = np.array([[0, 2, -1], [1, 5, 7]])
    np.testing.assert_allclose(hit_rate_at_k(ranks, 3), [1, 1])
    np.testing.assert_allclose(recall_at_k(ranks, 3), [1.0, 1 / 3])
    np.testing.assert_allclose(precision_at_k(ranks, 3), [2 / 3, 1 / 3])
    ideal_2 = 1 + 1 / math.log2(3)
    ideal_3 = ideal_2 + 0.5
    np.testing.assert_allclose(ndcg_at_k(ranks, 3), [1.5 / ideal_2, (1 / math.log2(3)) / ideal_3])
    np.testing.assert_allclose(mrr_at_k(ranks, 3), [1.0, 0.5])
    np.testing.assert_allclose(map_at_k(ranks, 3), [(1 + 2 / 3) / 2, 0.5 / 3])


def test_map_normalises_by_k_when_fewer_slots_than_relevant() -> None:
    np.testing.assert_allclose(map_at_k(np.array([[0, 1, 2, 3]]), 2), [1.0])
    np.testing.assert_allclose(recall_at_k(np.array([[0, 1, 2, 3]]), 2), [0.5])


def test_examples_without_relevant_items_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one relevant"):
        hit_rate_at_k(np.array([[0, -1], [-1, -1]]), 5)


def test_named_metrics_and_means() -> None:
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    with pytest.raises(ValueError):
        parse_metric("ndcg")
    np.testing.assert_allclose(ranking_metric("mrr@10", RANKS), mrr_at_k(RANKS, 10))
    means = ranking_metrics(RANKS, [3, 10], prefix="sampled_")
    assert set(means) == {
        f"sampled_{m}@{k}" for m in ("hr", "ndcg", "mrr", "recall", "precision", "map") for k in (3, 10)
    }
    assert means["sampled_hr@10"] == pytest.approx(0.75)
    assert means["sampled_ndcg@3"] == pytest.approx(0.375)


def test_coverage_and_popularity() -> None:
    topk = np.array([[1, 2], [2, 3]])
    assert coverage_at_k(topk, 5, 1) == pytest.approx(0.4)
    assert coverage_at_k(topk, 5, 2) == pytest.approx(0.6)
    counts = np.array([0, 10, 4, 2, 0, 0])
    assert popularity_at_k(topk, counts, 1) == pytest.approx(7.0)
    assert popularity_at_k(topk, counts, 1, normalise=True) == pytest.approx(0.7)
    assert popularity_at_k(topk, counts, 2) == pytest.approx(5.0)
    assert popularity_at_k(np.array([[1, 0]]), counts, 2) == pytest.approx(10.0)  # empty slot skipped
    assert coverage_at_k(np.array([[0, 0]]), 5, 2) == 0.0


def test_threshold_metrics_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.5])  # predicted 1,0,1,0,1: tp 2, fp 1, fn 1, tn 1
    assert accuracy(y, s) == pytest.approx(3 / 5)
    assert precision(y, s) == pytest.approx(2 / 3)
    assert recall(y, s) == pytest.approx(2 / 3)
    assert f1(y, s) == pytest.approx(2 / 3)
    assert precision(y, s, threshold=0.95) == 0.0
    assert f1(y, s, threshold=0.95) == 0.0


def test_average_ranks_share_ties() -> None:
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_auc_hand_cases() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.2, 0.5, 0.5, 0.9])) == pytest.approx(3.5 / 4)
    assert roc_auc(np.array([1, 0]), np.array([0.0, 1.0])) == 0.0


def test_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 5, 200).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_log_loss_by_hand_and_clipped() -> None:
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(expected)
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7))
    with pytest.raises(ValueError):
        log_loss(np.array([1]), np.array([1.5]))


def test_labels_must_be_binary() -> None:
    with pytest.raises(ValueError, match="0/1"):
        accuracy(np.array([0, 2]), np.array([0.1, 0.9]))


def test_classification_metrics_names() -> None:
    metrics = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.4, 0.6]))
    assert list(metrics) == ["accuracy", "precision", "recall", "f1", "auc", "logloss"]
    assert metrics["auc"] == pytest.approx(0.75)
