"""Distributed data-parallel training: the shards of an epoch, two gloo processes against one, refusals.

The two-process run is launched by `lmrec train --nproc 2` (torchrun on CPU, one thread per process). With
dropout off, the same seed and the same global batch, one and two processes train on the same global
batches with the same averaged gradients, so they differ only by floating-point summation order: losses
agree to 1e-5 (relative) and validation NDCG@10 within TOLERANCE.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrec import api
from lmrec.errors import ConfigError
from lmrec.models.classifier import ClassifierConfig
from lmrec.training.classifier import train_run
from lmrec.training.distributed import shard_batches
from lmrec.training.windows import WindowSet

TOLERANCE = 0.01  # absolute, on validation NDCG@10 (dropout off; measured: a gap of 0, losses 3e-8 apart)
TINY = [
    "model.hidden=32",
    "model.max_len=8",
    "model.dropout=0",
    "train.batch_size=16",
    "train.lr=0.005",
    "train.patience=100",
    "eval.ks=[1,10]",
]


@pytest.fixture
def noisy_cycle(tmp_path: Path, make_prepared) -> Path:
    """80 users on 30 items who mostly step to the next item of a cycle and sometimes jump: learnable, not
    trivially (validation NDCG@10 stays well below 1 after a few epochs)."""
    rng = np.random.default_rng(3)
    sequences = []
    for _ in range(80):
        item, seq = int(rng.integers(30)), []
        for _ in range(int(rng.integers(8, 40))):
            seq.append(item + 1)
            item = (item + 1) % 30 if rng.random() < 0.6 else int(rng.integers(30))
        sequences.append(seq)
    return make_prepared(tmp_path / "data", sequences, 30)


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One torch / OpenMP thread per process, waiting passively (2 processes on a small shared machine)."""
    for name, value in {"LMREC_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("world", "batch_size"), [(2, 8), (2, 7), (3, 16), (4, 3)])
def test_shards_are_disjoint_and_cover_each_global_batch(world: int, batch_size: int) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, size=40)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    windows = WindowSet(rng.integers(1, 50, size=int(lengths.sum())), starts, lengths, max_len=6)
    order = np.random.default_rng(7).permutation(len(windows))  # what one process draws for the epoch
    shards = [list(shard_batches(windows, batch_size, np.random.default_rng(7), r, world)) for r in range(world)]
    steps = -(-len(windows) // batch_size)
    assert all(len(shard) == steps for shard in shards)  # every rank takes the same number of steps
    epoch: list[int] = []
    for step in range(steps):
        parts = [shards[r][step] for r in range(world)]
        taken = [idx.tolist() for idx, share in parts if share > 0]
        flat = [w for idx in taken for w in idx]
        assert len(flat) == len(set(flat))  # disjoint
        assert sorted(flat) == sorted(order[step * batch_size : (step + 1) * batch_size].tolist())
        assert sum(share for _, share in parts) == pytest.approx(1.0)  # shares of the batch's targets
        epoch += flat
    assert sorted(epoch) == list(range(len(windows)))  # the epoch's windows, each exactly once
    if batch_size % world == 0:  # then rank r's shard is every world-th window, as DistributedSampler's
        for r in range(world):
            assert np.concatenate([idx for idx, share in shards[r] if share]).tolist() == order[r::world].tolist()


def test_two_processes_match_one_and_resume(noisy_cycle: Path, tmp_path: Path, run_cli, one_thread) -> None:
    single = api.train(noisy_cycle, tmp_path / "one", model="sasrec", overrides=[*TINY, "train.epochs=3"], seed=1)
    two = tmp_path / "two"
    base = ["train", str(noisy_cycle), "--model", "sasrec", "--out", str(two), "--seed", "1", "--nproc", "2"]
    code, _, err = run_cli([*base, *(f"--set={o}" for o in [*TINY, "train.epochs=2"])])
    assert code == 0, err
    # rank 0 alone wrote the run: one config, one best model, one resume checkpoint, one TensorBoard file
    files = sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file() and p.name != ".lock")
    assert [f for f in files if not f.startswith("logs/")] == [
        "checkpoints/last.pt",
        "config.yaml",
        "metrics.json",
        "model/model.pt",
        "ranks/test.npz",
        "ranks/valid.npz",
        "run.json",
    ]
    assert len([f for f in files if f.startswith("logs/")]) == 1
    first = json.loads((two / "metrics.json").read_text())
    assert first["distributed"] == {
        "processes": 2,
        "backend": "gloo",
        "device": "cpu",
        "global_batch_size": 16,
        "windows_per_process": 8,
    }
    # resumed under DDP for a third epoch, it ends where one process ends after three
    code, _, err = run_cli([*base, "--resume", "--set=train.epochs=3"])
    assert code == 0, err
    resumed = json.loads((two / "metrics.json").read_text())
    assert resumed["epochs"] == 3 and json.loads((two / "run.json").read_text())["state"] == "finished"
    losses = [row["loss"] for row in resumed["history"]]
    assert losses == pytest.approx([row["loss"] for row in single["history"]], rel=1e-5)
    assert 0.05 < single["valid"]["ndcg@10"] < 0.95  # a figure that can move, not a solved task
    assert abs(resumed["valid"]["ndcg@10"] - single["valid"]["ndcg@10"]) <= TOLERANCE
    assert abs(resumed["test"]["ndcg@10"] - single["test"]["ndcg@10"]) <= TOLERANCE


def test_models_without_gradient_training_are_refused(noisy_cycle: Path, tmp_path: Path, run_cli) -> None:
    for model in ("pop", "itemknn"):
        code, _, err = run_cli(["train", str(noisy_cycle), "--model", model, "--out", str(tmp_path / model)])
        assert code == 0, err  # one process: fine
        code, _, err = run_cli(
            ["train", str(noisy_cycle), "--model", model, "--out", str(tmp_path / "x"), "--nproc", "2"]
        )
        assert code == 1 and "not trained by gradient descent" in " ".join(err.split())
        assert not (tmp_path / "x").exists()


def test_the_classifier_refuses_torchrun(noisy_cycle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"classifier .* trains in one process only"):
        train_run(noisy_cycle, tmp_path / "clf", ClassifierConfig(label="rating>=4"))
    assert not (tmp_path / "clf").exists()
