"""The full-ranking evaluator on a tiny hand-written PreparedDataset and deterministic models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor

from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import EvalResult, Evaluator, evaluate, ranking_keys
from lmrec.models.base import ModelConfig, SequentialRecommender

N_ITEMS = 6
# (item, split) per user, chronological; split 0 train, 1 valid, 2 test.
SEQUENCES = [
    [(1, 0), (2, 0), (3, 1), (4, 2)],  # test target 4 after history 1, 2, 3
    [(5, 0), (1, 1), (6, 2)],  # test target 6 after history 5, 1
    [(2, 0), (3, 0), (2, 2)],  # test target 2 is already in its history
]


def write_dataset(root: Path, sequences: list[list[tuple[int, int]]], n_items: int) -> PreparedDataset:
    """Write a prepared directory in the documented layout and open it."""
    root.mkdir(parents=True, exist_ok=True)
    users = [u for u, seq in enumerate(sequences) for _ in seq]
    events = [event for seq in sequences for event in seq]
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array(users, pa.int32()),
                "item_idx": pa.array([item for item, _ in events], pa.int32()),
                "timestamp": pa.array([float(i) for i in range(len(events))], pa.float64()),
                "split": pa.array([split for _, split in events], pa.int8()),
            }
        ),
        root / "interactions.parquet",
    )
    pq.write_table(
        pa.table({"user_idx": list(range(len(sequences))), "user_id": [f"u{u}" for u in range(len(sequences))]}),
        root / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_idx": list(range(1, n_items + 1)),
                "item_id": [f"i{i}" for i in range(1, n_items + 1)],
                "text": [None] * n_items,
                "cold": [False] * n_items,
            }
        ),
        root / "items.parquet",
    )
    manifest = {
        "format_version": 1,
        "fingerprint": "tiny-fp",
        "users": len(sequences),
        "items": n_items,
        "interactions": len(events),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return PreparedDataset(root)


class FixedScores(SequentialRecommender):
    """Scores every history with the same vector; records what it was called with."""

    def __init__(self, scores: list[float], max_len: int = 3) -> None:
        super().__init__(len(scores) - 1, ModelConfig(max_len=max_len))
        self.register_buffer("scores", torch.tensor(scores, dtype=torch.float32))
        self.calls: list[tuple[Tensor, Tensor, bool, bool]] = []

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        self.calls.append((history.clone(), lengths.clone(), self.training, torch.is_inference_mode_enabled()))
        return self.scores.expand(history.shape[0], -1).clone()


class NextOfLast(SequentialRecommender):
    """Scores item (last history item + 1) highest, then favours low ids."""

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items, ModelConfig(max_len=2))

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        scores = -torch.arange(self.n_items + 1, dtype=torch.float32).expand(history.shape[0], -1).clone()
        follow = (history[:, -1] % self.n_items) + 1
        scores[torch.arange(history.shape[0]), follow] = 100.0
        return self.mask_padding(scores)


@pytest.fixture()
def dataset(tmp_path: Path) -> PreparedDataset:
    return write_dataset(tmp_path / "tiny", SEQUENCES, N_ITEMS)


def test_histories_are_right_aligned_and_truncated(dataset: PreparedDataset) -> None:
    evaluator = Evaluator(dataset, "test", ks=[1])
    history, lengths = evaluator.histories(slice(0, 3), 4)
    # as wide as the longest history of the batch (3), not max_len (4): leading padding carries nothing
    np.testing.assert_array_equal(history, [[1, 2, 3], [0, 5, 1], [0, 2, 3]])
    np.testing.assert_array_equal(lengths, [3, 2, 2])
    history, lengths = evaluator.histories(slice(0, 3), 2)
    np.testing.assert_array_equal(history, [[2, 3], [5, 1], [2, 3]])
    np.testing.assert_array_equal(lengths, [2, 2, 2])
    valid, valid_lengths = Evaluator(dataset, "valid", ks=[1]).histories(slice(0, 2), 3)
    np.testing.assert_array_equal(valid, [[1, 2], [0, 5]])
    np.testing.assert_array_equal(valid_lengths, [2, 1])


def test_equal_scores_rank_by_item_id(dataset: PreparedDataset) -> None:
    result = evaluate(FixedScores([0.0] * 7), dataset, ks=[1, 3], mask_history=False)
    np.testing.assert_array_equal(result.ranks, [3, 5, 1])  # ids below targets 4, 6, 2
    np.testing.assert_array_equal(result.topk, [[1, 2, 3]] * 3)


def test_ties_with_target_count_only_lower_ids() -> None:
    keys = ranking_keys(torch.tensor([[float("-inf"), 1.0, 2.0, 2.0, 2.0, -0.0, 0.0]]))
    target = keys[:, 3:4]
    assert int((keys > target).sum()) == 1  # item 2 (same score, lower id); 4 ties but has a higher id
    assert int((keys > keys[:, 5:6]).sum()) == 4  # -0.0 ties with +0.0
    assert keys.topk(3).indices.tolist() == [[2, 3, 4]]


def test_history_is_masked_but_never_the_target(dataset: PreparedDataset) -> None:
    # Scores favour items 1..3, which are history items of users 0 and 2.
    model = FixedScores([0.0, 9.0, 8.0, 7.0, 1.0, 2.0, 3.0])
    masked = evaluate(model, dataset, ks=[1, 3])
    # user 0: 1, 2, 3 masked → 6, 5 above 4; user 1: 1, 5 masked → 2, 3 above 6;
    # user 2: 3 masked, target 2 kept → 1 above it.
    np.testing.assert_array_equal(masked.ranks, [2, 2, 1])
    np.testing.assert_array_equal(masked.topk, [[6, 5, 4], [2, 3, 6], [1, 2, 6]])
    one_by_one = Evaluator(dataset, ks=[1, 3], batch_size=1)(model)
    np.testing.assert_array_equal(one_by_one.ranks, masked.ranks)
    np.testing.assert_array_equal(one_by_one.topk, masked.topk)
    unmasked = evaluate(model, dataset, ks=[1, 3], mask_history=False)
    np.testing.assert_array_equal(unmasked.ranks, [5, 3, 1])


def test_padding_never_ranked_even_when_everything_is_minus_inf(dataset: PreparedDataset) -> None:
    result = evaluate(FixedScores([float("-inf")] * 7), dataset, ks=[1, 6], mask_history=False)
    np.testing.assert_array_equal(result.ranks, [3, 5, 1])
    assert (result.topk != 0).all()
    masked = evaluate(FixedScores([float("-inf")] * 7), dataset, ks=[1, 6])
    np.testing.assert_array_equal(masked.ranks, [0, 3, 1])  # masked items never above the target
    np.testing.assert_array_equal(masked.topk[0], [4, 5, 6, 0, 0, 0])  # only 3 rankable items


def test_padding_ignored_when_a_model_scores_it(dataset: PreparedDataset) -> None:
    result = evaluate(FixedScores([99.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), dataset, ks=[1], mask_history=False)
    np.testing.assert_array_equal(result.ranks, [3, 5, 1])
    assert (result.topk != 0).all()


def test_model_sees_right_aligned_history_in_eval_and_inference_mode(dataset: PreparedDataset) -> None:
    model = FixedScores([0.0] * 7, max_len=2)
    model.train()
    Evaluator(dataset, ks=[1], batch_size=2)(model)
    assert model.training  # restored afterwards
    (h1, l1, training, inference), (h2, _, _, _) = model.calls
    assert not training and inference
    assert torch.equal(torch.cat([h1, h2]), torch.tensor([[2, 3], [5, 1], [2, 3]]))
    assert l1.tolist() == [2, 2]


def test_last_item_model_and_metrics(dataset: PreparedDataset) -> None:
    result = evaluate(NextOfLast(N_ITEMS), dataset, ks=[1, 2])
    # last items 3, 1, 3 → favourite 4, 2, 4. User 0 (target 4): hit. User 1 (target 6, 5 and 1
    # masked): 2 first, then 3, 4 by id → rank 3. User 2 (target 2, 3 masked): 4, then 1 → rank 2.
    np.testing.assert_array_equal(result.ranks, [0, 3, 2])
    assert result.metrics["hr@1"] == pytest.approx(1 / 3)
    assert result.metrics["ndcg@2"] == pytest.approx(1 / 3)
    assert result.metrics["mrr@2"] == pytest.approx(1 / 3)
    assert result.metrics["precision@2"] == pytest.approx(1 / 6)
    # top-2 lists: [4, 5], [2, 3], [4, 1] → items 1..5 shown
    assert result.metrics["coverage@2"] == pytest.approx(5 / 6)
    train_counts = np.array([0, 1, 2, 1, 0, 1, 0])
    assert result.metrics["popularity@1"] == pytest.approx(train_counts[[4, 2, 4]].mean())
    assert result.metrics["popularity_norm@2"] == pytest.approx(np.mean([0.5, 1.5, 0.5]) / 2)
    np.testing.assert_array_equal(result.topk, [[4, 5], [2, 3], [4, 1]])
    np.testing.assert_array_equal(result.users, [0, 1, 2])
    np.testing.assert_array_equal(result.items, [4, 6, 2])
    np.testing.assert_array_equal(result.positions, [3, 2, 2])
    np.testing.assert_array_equal(result.per_example("hr@1"), [1, 0, 0])


def test_ranks_match_the_tie_breaking_formula() -> None:
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.integers(0, 4, size=(8, 12)), dtype=torch.float32)
    scores[:, 0] = float("-inf")
    keys = ranking_keys(scores)
    for b in range(8):
        for target in range(1, 12):
            s, ids = scores[b, 1:], torch.arange(1, 12)
            expected = int((s > s[target - 1]).sum() + ((s == s[target - 1]) & (ids < target)).sum())
            assert int((keys[b, 1:] > keys[b, target]).sum()) == expected


def test_save_and_load_round_trip(dataset: PreparedDataset, tmp_path: Path) -> None:
    result = evaluate(NextOfLast(N_ITEMS), dataset, ks=[1, 2])
    path = result.save(tmp_path / "ranks.npz")
    loaded = EvalResult.load(path)
    for name in ("users", "items", "positions", "ranks", "topk"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert (loaded.split, loaded.ks, loaded.metrics, loaded.fingerprint) == (
        "test",
        (1, 2),
        result.metrics,
        "tiny-fp",
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_sampled_negatives_are_named_apart_and_exclude_target_and_history(dataset: PreparedDataset) -> None:
    evaluator = Evaluator(dataset, ks=[1, 2], sampled_negatives=2, seed=7)
    negatives = evaluator.negatives
    assert negatives is not None and negatives.shape == (3, 2)
    allowed = [{5, 6}, {2, 3, 4}, {1, 4, 5, 6}]
    for row, ok in zip(negatives, allowed, strict=True):
        assert set(row.tolist()) <= ok and len(set(row.tolist())) == 2
    again = Evaluator(dataset, ks=[1, 2], sampled_negatives=2, seed=7).negatives
    np.testing.assert_array_equal(again, negatives)
    result = evaluator(FixedScores([0.0] * 7))
    assert "sampled_hr@1" in result.metrics and "hr@1" not in result.metrics
    expected = [(negatives[i] < target).sum() for i, target in enumerate([4, 6, 2])]
    np.testing.assert_array_equal(result.ranks, expected)
    with pytest.raises(ValueError, match="protocol"):
        result.per_example("hr@1")
    assert result.per_example("sampled_hr@1").shape == (3,)


def test_popularity_sampling_skips_items_never_trained_on(dataset: PreparedDataset) -> None:
    negatives = Evaluator(dataset, ks=[1], sampled_negatives=1, sampling="popularity", mask_history=False).negatives
    assert negatives is not None
    assert set(negatives.ravel().tolist()) <= {1, 2, 3, 5}  # items with training events
    with pytest.raises(ValueError, match="cannot sample"):
        Evaluator(dataset, ks=[1], sampled_negatives=4)


def test_bad_model_output_is_reported(dataset: PreparedDataset) -> None:
    class Short(FixedScores):
        def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
            return super().score_all(history, lengths)[:, :-1]

    with pytest.raises(ValueError, match="shape"):
        evaluate(Short([0.0] * 7), dataset, ks=[1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(FixedScores([0.0, float("nan"), 0, 0, 0, 0, 0]), dataset, ks=[1])
    with pytest.raises(ValueError, match="cut-offs"):
        evaluate(FixedScores([0.0] * 7), dataset, ks=[7])
