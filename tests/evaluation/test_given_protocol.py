"""Given examples (RecBole benchmark files): scored with their own histories, not masked by default, clustered
intervals, the protocol in metrics.json, validation on the given valid examples, and the real Industrial figures."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor

from lmrec import api
from lmrec.config import build_config
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import EvalResult, Evaluator, evaluate
from lmrec.evaluation.stats import bootstrap_ci, compare, paired_test
from lmrec.models.base import ModelConfig, SequentialRecommender
from lmrec.registry.run import RunDir
from lmrec.training.trainer import Trainer

N_ITEMS = 6
TRAIN = [[1, 2, 3], [4, 5], []]  # user 2 has no training event
# (user, history, target) as listed by the source; user 0's test history is not its training sequence.
VALID = [(0, [2, 3], 4), (1, [4, 5], 6)]
TEST = [(0, [1, 2, 3, 4], 2), (0, [6], 5), (2, [5, 6], 1)]


def write_given(root: Path, train: list[list[int]], valid: list, test: list, n_items: int) -> PreparedDataset:
    """Write a given-split prepared directory in the documented layout and open it."""
    root.mkdir(parents=True, exist_ok=True)
    lengths = [len(s) for s in train]
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array(np.repeat(np.arange(len(train)), lengths), pa.int32()),
                "item_idx": pa.array([i for s in train for i in s], pa.int32()),
                "timestamp": pa.array([float(t) for n in lengths for t in range(n)], pa.float64()),
                "split": pa.array([0] * sum(lengths), pa.int8()),
            }
        ),
        root / "interactions.parquet",
    )
    rows = [(*row, 1) for row in valid] + [(*row, 2) for row in test]
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array([u for u, *_ in rows], pa.int32()),
                "history": pa.array([h for _, h, _, _ in rows], pa.list_(pa.int32())),
                "item_idx": pa.array([t for _, _, t, _ in rows], pa.int32()),
                "split": pa.array([s for *_, s in rows], pa.int8()),
                "line": pa.array(list(range(2, len(valid) + 2)) + list(range(2, len(test) + 2)), pa.int64()),
            }
        ),
        root / "examples.parquet",
    )
    users = pa.table({"user_idx": list(range(len(train))), "user_id": [f"u{u}" for u in range(len(train))]})
    pq.write_table(users, root / "users.parquet")
    ids = list(range(1, n_items + 1))
    items = {
        "item_idx": ids,
        "item_id": [f"i{i}" for i in ids],
        "text": [f"item {i}" for i in ids],
        "cold": [False] * n_items,
    }
    pq.write_table(pa.table(items), root / "items.parquet")
    manifest = {
        "format_version": 1,
        "fingerprint": f"given-{len(rows)}",
        "users": len(train),
        "items": n_items,
        "interactions": sum(lengths),
        "split": {"method": "given"},
        "name": "given",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return PreparedDataset(root)


class Recording(SequentialRecommender):
    """Scores every item equally (ties go to lower ids); records the histories it was given."""

    def __init__(self, n_items: int, max_len: int = 3) -> None:
        super().__init__(n_items, ModelConfig(max_len=max_len))
        self.histories: list[Tensor] = []

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        self.histories.append(history.clone())
        return self.mask_padding(torch.zeros(history.shape[0], self.n_items + 1))


@pytest.fixture()
def given(tmp_path: Path) -> PreparedDataset:
    return write_given(tmp_path / "given", TRAIN, VALID, TEST, N_ITEMS)


def test_each_example_is_scored_with_its_own_history_and_target(given: PreparedDataset) -> None:
    model = Recording(N_ITEMS, max_len=3)
    result = evaluate(model, given, "test", ks=[1, 3])
    (history,) = model.histories
    np.testing.assert_array_equal(history, [[2, 3, 4], [0, 0, 6], [0, 5, 6]])  # as given, right-aligned, cut to 3
    np.testing.assert_array_equal(result.users, [0, 0, 2])
    np.testing.assert_array_equal(result.items, [2, 5, 1])
    np.testing.assert_array_equal(result.positions, [4, 1, 2])
    # Not masked by default: target 2 keeps rank 1 (item 1 ranks above it) although it is in its history.
    assert not result.mask_history
    np.testing.assert_array_equal(result.ranks, [1, 4, 0])
    assert result.metrics["hr@1"] == pytest.approx(1 / 3)
    assert result.method == "given" and "history not masked" in result.protocol


def test_masking_can_be_asked_and_masks_the_given_history(given: PreparedDataset) -> None:
    result = evaluate(Recording(N_ITEMS, max_len=2), given, "test", ks=[1], mask_history=True)
    # Example 0 masks 1, 3, 4 (its history but its target 2): rank 0; example 1 masks 6: items 1-4 above 5.
    np.testing.assert_array_equal(result.ranks, [0, 4, 0])


def test_splits_of_sequences_keep_masking_by_default(tmp_path: Path, make_prepared) -> None:
    loo = PreparedDataset(make_prepared(tmp_path / "loo", [[1, 2, 3, 4], [2, 3, 4, 5]], 5))
    assert loo.default_mask_history and Evaluator(loo, "test", ks=[1]).mask_history
    assert Evaluator(loo, "test", ks=[1], mask_history=False).mask_history is False


def test_protocol_info_says_how_the_metrics_were_made(given: PreparedDataset, tmp_path: Path) -> None:
    result = evaluate(Recording(N_ITEMS), given, "test", ks=[1])
    assert result.protocol_info() == {
        "split": "test",
        "targets": "given examples",
        "examples": 3,
        "users": 2,
        "ranking": "all items",
        "mask_history": False,
        "averaged_over": "examples",
        "intervals": "bootstrap over users (clustered)",
    }
    loaded = EvalResult.load(result.save(tmp_path / "ranks.npz"))
    assert loaded.method == "given" and loaded.protocol_info() == result.protocol_info()


def test_intervals_and_paired_tests_resample_users(given: PreparedDataset) -> None:
    rng = np.random.default_rng(0)
    values = rng.binomial(1, 0.3, 400).astype(float)
    unique = np.arange(400)
    assert bootstrap_ci(values, groups=unique) == bootstrap_ci(values), "one example per user: today's numbers"
    assert paired_test(values - 0.3, groups=unique) == paired_test(values - 0.3)
    # Users with 20 identical examples each: resampling users makes the interval as wide as 20 examples'.
    users = np.repeat(np.arange(20), 20)
    clustered = np.repeat(rng.binomial(1, 0.3, 20).astype(float), 20)
    wide, narrow = bootstrap_ci(clustered, groups=users), bootstrap_ci(clustered)
    assert wide.mean == narrow.mean
    assert (wide.high - wide.low) > 3 * (narrow.high - narrow.low)
    first = evaluate(Recording(N_ITEMS), given, "test", ks=[1])
    second = replace(first, ranks=np.array([0, 4, 0]))
    deltas = second.per_example("hr@1") - first.per_example("hr@1")
    assert compare(first, second, "hr@1") == paired_test(deltas, groups=first.users)


def test_validation_and_metrics_json_use_the_given_examples(given: PreparedDataset, tmp_path: Path) -> None:
    config = build_config("sasrec", None, ["model.hidden=16", "model.max_len=4", "train.epochs=1", "eval.ks=[1,3]"], 0)
    trainer = Trainer(given, config, RunDir(tmp_path / "run"), progress=False)
    expected = evaluate(trainer.model, given, "valid", ks=[1, 3], batch_size=config.eval.batch_size)
    assert len(expected) == len(VALID) and trainer.validate() == expected.metrics
    metrics = api.train(given.path, tmp_path / "pop", model="pop", overrides=["eval.ks=[1,3]"])
    assert metrics["mask_history"] is False
    assert metrics["protocol"]["targets"] == "given examples" and metrics["protocol"]["examples"] == len(TEST)


def test_real_industrial_pop_scores_the_4533_test_examples(data_root: Path, tmp_path: Path) -> None:
    folder = data_root / "amazon-industrial"
    if not folder.is_dir():
        pytest.skip(f"the MiniOneRec Industrial files are not at {folder}")
    ds = api.prepare(folder, tmp_path / "ind")
    metrics = api.train(tmp_path / "ind", tmp_path / "pop", model="pop")
    test = metrics["test"]
    assert metrics["protocol"]["examples"] == 4533 and metrics["protocol"]["users"] == 1987
    assert metrics["mask_history"] is False
    # Popularity of the training events, ties by item id, every item ranked: checked by hand on the raw files.
    figures = (test["hr@5"], test["ndcg@5"], test["hr@10"], test["ndcg@10"])
    assert [round(x, 4) for x in figures] == [0.0499, 0.0410, 0.0538, 0.0422]
    result = EvalResult.load(RunDir(tmp_path / "pop").ranks_file("test"))
    assert len(result) == 4533 and len(ds.targets("test")) == 4533
    assert math.isclose(result.metrics["ndcg@10"], test["ndcg@10"])
