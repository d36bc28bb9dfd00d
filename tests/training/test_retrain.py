"""Retraining from the event store: snapshot, warm-started candidate, promotion gate, lock and kill safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lmrec
from lmrec.data.dataset import TEST, TRAIN, PreparedDataset
from lmrec.errors import ConfigError, RunError
from lmrec.locks import file_lock
from lmrec.registry.versions import ModelRegistry
from lmrec.serve.schemas import CleanEvent
from lmrec.serve.store import EventStore
from lmrec.training.retrain import RetrainOptions, _cutoffs, retrain, retrain_every

N_ITEMS = 30
TINY = ["model.hidden=16", "model.layers=1", "model.heads=1", "model.max_len=10", "train.batch_size=32"]


def cycle_events(users: int, steps: int, start: float, shift: int = 1) -> list[CleanEvent]:
    """Each user keeps walking the item cycle (i → i+shift) from where their training sequence ended."""
    return [
        CleanEvent(f"u{u}", f"i{(u * 7 + 20 + k * shift) % N_ITEMS + 1}", "view", start + k + u * 1e-3, None)
        for u in range(users)
        for k in range(steps)
    ]


@pytest.fixture
def setup(tmp_path: Path, make_prepared) -> tuple[ModelRegistry, str]:
    """A SASRec trained on item cycles and promoted; a store holding the users' next steps on the cycle
    plus a user and an item nobody saw before."""
    sequences = [[(u * 7 + t) % N_ITEMS + 1 for t in range(20)] for u in range(60)]
    data = make_prepared(tmp_path / "data", sequences, N_ITEMS)
    lmrec.train(data, tmp_path / "run", model="sasrec", overrides=[*TINY, "train.epochs=3"])
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tmp_path / "run", promote=True)
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    store = EventStore(url)
    store.append([*cycle_events(60, 12, 100.0, shift=3), CleanEvent("newcomer", "brand-new", "view", 105.0, None)], {})
    store.close()
    return registry, url


def test_a_round_snapshots_new_events_warm_starts_and_promotes_a_better_candidate(setup, run_cli) -> None:
    registry, url = setup
    result = retrain(registry.root, url, RetrainOptions(overrides=("train.epochs=6",), min_events=10))
    assert result.version == 2 and result.promoted and registry.promoted().version == 2
    gate = result.gate
    assert gate["candidate"] > gate["current"] and gate["ci95"][0] > 0 and gate["window"]["events"] > 100
    version = registry.get(2)
    assert version.lineage["parent_version"] == 1 and version.lineage["events_used"] == 60 * 12 + 1
    assert version.gate == gate
    snapshot = PreparedDataset.load(version.dataset)
    parent = PreparedDataset.load(registry.get(1).dataset)
    assert snapshot.extends(parent.fingerprint) and snapshot.events_through == 60 * 12 + 1
    assert {"newcomer"} <= set(snapshot.user_ids) and "brand-new" in set(snapshot.item_ids)
    assert len(snapshot.items) == len(parent.items) + 60 * 12 + 1
    # Leakage: no event of the gate's window is a training event, and the window is the latest one.
    holdout = version.lineage["holdout_from"]
    assert snapshot.timestamps[snapshot.split == TRAIN].max() < holdout
    assert snapshot.timestamps[snapshot.split == TEST].min() >= holdout
    metrics = json.loads((version.path / "metrics.json").read_text())
    assert metrics["warm_start"]["items_kept"] == N_ITEMS and metrics["warm_start"]["items_new"] == 1
    code, out, _ = run_cli(["registry", "show", "--registry", str(registry.root)])
    assert code == 0 and "version 2 (promoted)" in out and "gate:" in out and "lineage: from version 1" in out


def test_a_worse_candidate_is_registered_but_not_promoted(setup) -> None:
    registry, url = setup
    worse = RetrainOptions(overrides=("train.epochs=1", "train.lr=0.000001"), from_scratch=True, min_events=10)
    result = retrain(registry.root, url, worse)
    assert result.version == 2 and not result.promoted and registry.promoted().version == 1
    assert result.gate["delta"] < 0 and "not above" in result.gate["reason"]
    assert registry.get(2).gate["promoted"] is False


def test_too_few_new_events_change_nothing(setup) -> None:
    registry, url = setup
    before = registry.index_file.read_bytes()
    result = retrain(registry.root, url, RetrainOptions(min_events=10_000))
    assert result.skipped.startswith("721 new events since version 1") and result.version is None
    assert registry.index_file.read_bytes() == before


def test_a_second_retrain_is_refused_while_one_runs(setup) -> None:
    registry, url = setup
    with file_lock(registry.root / ".retrain.lock"), pytest.raises(RunError, match="another retrain is running"):
        retrain(registry.root, url)


def test_a_retrain_killed_mid_way_leaves_the_registry_as_it_was(setup, tmp_path: Path) -> None:
    registry, url = setup
    before = registry.index_file.read_bytes()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LMREC_THREADS": "1"}
    command = [sys.executable, "-m", "lmrec", "retrain", str(registry.root), "--store", url, "--min-events", "10",
               "--set", "train.epochs=100000", "--set", "train.patience=100000"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((registry.root / "rounds").glob("*/run/checkpoints/last.pt")):
            assert process.poll() is None and time.monotonic() < deadline, "the retrain never started training"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert registry.index_file.read_bytes() == before and registry.promoted().version == 1
    result = retrain(registry.root, url, RetrainOptions(overrides=("train.epochs=2",), min_events=10))
    assert result.version == 2 and len(list((registry.root / "rounds").glob("*"))) == 1  # the leftover is gone


def test_the_command_prints_one_json_line_per_round(setup, run_cli) -> None:
    registry, url = setup
    argv = ["retrain", str(registry.root), "--store", url, "--json", "--min-events", "10", "--set", "train.epochs=2"]
    code, out, _ = run_cli(argv)
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert record["version"] == 2 and record["parent"] == 1 and set(record["gate"]) >= {"delta", "ci95", "reason"}
    code, _, err = run_cli(["retrain", str(registry.root), "--store", url, "--every", "soon"])
    assert code == 1 and "--every 'soon' is not a period" in err


def test_shares_that_leave_nothing_to_train_on_are_refused(setup) -> None:
    registry, url = setup
    with pytest.raises(ConfigError, match="--holdout"):
        retrain(registry.root, url, RetrainOptions(holdout=0.7, valid=0.4))


def test_the_windows_are_the_latest_shares_of_the_new_events() -> None:
    holdout, valid = _cutoffs(np.arange(10.0)[::-1], RetrainOptions(holdout=0.2, valid=0.1))
    assert (holdout, valid) == (8.0, 7.0)


def test_the_loop_runs_rounds_until_told_and_goes_on_after_a_failed_one(setup, tmp_path: Path) -> None:
    registry, url = setup
    outcomes: list = []
    options = RetrainOptions(overrides=("train.epochs=1",), min_events=10, margin=-1.0)
    assert retrain_every(registry.root, url, 0.0, options, rounds=2, on_round=outcomes.append) == 2
    assert outcomes[0].version == 2 and outcomes[1].skipped.startswith("0 new events since version 2")
    failing: list = []
    retrain_every(tmp_path / "empty-registry", url, 0.0, options, rounds=1, on_round=failing.append)
    assert isinstance(failing[0], RunError) and "no promoted version" in str(failing[0])
