"""Splits: leave-one-out, temporal and cold-items, targets files, and the no-leakage properties."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lmrec.data.dataset import TEST, TRAIN, VALID, PreparedDataset
from lmrec.data.prepare import prepare
from lmrec.errors import ConfigError, DataError


@pytest.fixture
def random_log(write) -> Path:
    """300 events of 30 users on 20 items, with many equal timestamps."""
    rng = random.Random(3)
    rows = [f"u{rng.randrange(30)},i{rng.randrange(20)},{1000 + rng.randrange(120) * 10}" for _ in range(300)]
    return write("log.csv", "user,item,ts\n" + "\n".join(rows) + "\n")


def _per_user(ds: PreparedDataset, array: np.ndarray) -> list[np.ndarray]:
    return [array[ds.offsets[u] : ds.offsets[u + 1]] for u in range(ds.n_users)]


def _assert_prefix_order(ds: PreparedDataset) -> None:
    for codes in _per_user(ds, ds.split):
        assert np.all(np.diff(codes) >= 0), "split codes must not decrease within a user"


@pytest.mark.parametrize(
    "options",
    [{}, {"split": "temporal", "cutoff": 0.8}, {"split": "cold-items", "cutoff": 0.7}, {"tie_break": "item"}],
)
def test_split_codes_never_decrease_within_a_user(random_log: Path, tmp_path: Path, options: dict) -> None:
    _assert_prefix_order(prepare(random_log, tmp_path / "out", **options))


def test_leave_one_out_targets_are_the_last_two_events(write, tmp_path: Path) -> None:
    rows = ["a,x,5", "a,y,1", "a,z,3", "a,w,4", "b,x,1", "b,y,2", "c,z,9"]
    ds = prepare(write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"), tmp_path / "out")
    split = {ds.user_ids[u]: codes.tolist() for u, codes in enumerate(_per_user(ds, ds.split))}
    assert split == {"a": [TRAIN, TRAIN, VALID, TEST], "b": [TRAIN, TEST], "c": [TRAIN]}
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["y", "z", "w", "x"]
    summary = ds.manifest["split"]
    assert (summary["users_train_only"], summary["users_without_valid"]) == (1, 1)
    assert (summary["train"], summary["valid"], summary["test"]) == (4, 1, 2)
    test = ds.targets("test")
    assert [ds.item_ids[i] for i in test.item] == ["x", "y"] and test.pos.tolist() == [3, 1]


def test_leave_one_out_never_trains_on_a_users_last_two_events(random_log: Path, tmp_path: Path) -> None:
    ds = prepare(random_log, tmp_path / "out")
    for times, codes in zip(_per_user(ds, ds.timestamps), _per_user(ds, ds.split), strict=True):
        train, held = times[codes == TRAIN], times[codes != TRAIN]
        if held.size and train.size:
            assert train.max() <= held.min()
        assert (codes == TEST).sum() == (times.size >= 2)
        assert (codes == VALID).sum() == (times.size >= 3)


def test_temporal_split_has_no_leakage_across_the_whole_dataset(random_log: Path, tmp_path: Path) -> None:
    ds = prepare(random_log, tmp_path / "out", split="temporal", cutoff=0.8)
    train = ds.timestamps[ds.split == TRAIN]
    valid = ds.timestamps[ds.split == VALID]
    test = ds.timestamps[ds.split == TEST]
    assert train.max() < valid.min() and valid.max() < test.min()
    summary = ds.manifest["split"]
    assert train.size + valid.size == pytest.approx(0.8 * ds.timestamps.size, abs=10)
    assert valid.size == pytest.approx(0.1 * (train.size + valid.size), abs=10)
    assert summary["cutoff"] == test.min() and summary["valid_cutoff"] == valid.min()


def test_temporal_cutoffs_as_times(write, tmp_path: Path) -> None:
    rows = ["a,x,2020-01-01", "a,y,2020-02-01", "a,z,2020-03-01", "b,x,2020-01-15", "b,z,2020-02-15"]
    path = write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n")
    ds = prepare(path, tmp_path / "a", split="temporal", cutoff="2020-02-15", valid_cutoff="2020-01-20")
    codes = {ds.user_ids[u]: c.tolist() for u, c in enumerate(_per_user(ds, ds.split))}
    assert codes == {"a": [TRAIN, VALID, TEST], "b": [TRAIN, TEST]}
    epoch = prepare(path, tmp_path / "b", split="temporal", cutoff=1581724800, valid_cutoff="1579478400")
    assert epoch.split.tolist() == ds.split.tolist()
    assert ds.manifest["split"]["cutoff_iso"] == "2020-02-15T00:00:00+00:00"
    with pytest.raises(DataError, match=r"validation cutoff .* is after the cutoff"):
        prepare(path, tmp_path / "c", split="temporal", cutoff="2020-01-10", valid_cutoff="2020-02-01")
    with pytest.raises(DataError, match="--cutoff 'soon' is neither"):
        prepare(path, tmp_path / "d", split="temporal", cutoff="soon")


def test_cold_items_are_flagged_and_never_trained(write, tmp_path: Path) -> None:
    rows = ["a,x,1", "a,y,2", "b,x,3", "b,z,4", "a,new1,10", "b,new2,11", "b,x,12", "c,z,2"]
    ds = prepare(
        write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"),
        tmp_path / "out",
        split="cold-items",
        cutoff=10,
        valid_cutoff=4,
    )
    items = pq.read_table(tmp_path / "out" / "items.parquet").to_pydict()
    cold = {iid for iid, flag in zip(items["item_id"], items["cold"], strict=True) if flag}
    assert cold == {"new1", "new2"}
    cold_idx = {ds.item_index[i] for i in cold}
    assert not any(item in cold_idx for item in ds.items[ds.split == TRAIN])
    assert ds.manifest["split"]["cold_items"] == 2
    assert ds.manifest["split"]["cold_test_targets"] == 2
    assert ds.manifest["split"]["test"] == 3


def test_targets_file_moves_the_first_occurrences_last(write, tmp_path: Path) -> None:
    rows = ["a,x,1", "a,v,2", "a,x,3", "a,w,4", "b,p,1", "b,q,2", "b,r,3", "c,p,1", "c,q,2", "c,r,3"]
    events = write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n")
    targets = write("targets.tsv", "user_id\tvalid_item\ttest_item\na\tx\tv\nb\tnope\tq\nzz\tp\tq\n")
    ds = prepare(events, tmp_path / "out", targets=targets)
    seq = {ds.user_ids[u]: [ds.item_ids[i] for i in ds.sequence(u)] for u in range(ds.n_users)}
    assert seq["a"] == ["x", "w", "x", "v"]  # the first x (t=1) is the validation target
    assert seq["b"] == ["p", "q", "r"]  # 'nope' is not b's item: plain leave-one-out
    codes = {ds.user_ids[u]: c.tolist() for u, c in enumerate(_per_user(ds, ds.split))}
    assert codes["a"] == [TRAIN, TRAIN, VALID, TEST] and codes["b"] == [TRAIN, VALID, TEST]
    assert ds.manifest["split"] | {"targets_file": None} == ds.manifest["split"] | {
        "targets_file": None,
        "targets_matched_users": 1,
        "targets_unmatched_users": 1,
        "targets_unknown_users": 1,
        "users_without_targets": 1,
    }
    _assert_prefix_order(ds)


def test_targets_file_is_read_in_the_encoding_option(write, tmp_path: Path) -> None:
    events = write("e.csv", "user,item,ts\nJosé,x,1\nJosé,y,2\nJosé,z,3\n", encoding="latin-1")
    targets = write("t.csv", "user_id,valid_item,test_item\nJosé,x,y\n", encoding="latin-1")
    ds = prepare(events, tmp_path / "out", targets=targets, encoding="latin-1")
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["z", "x", "y"]
    assert ds.manifest["split"]["targets_matched_users"] == 1


def test_targets_with_the_same_item_twice_and_no_validation(write, tmp_path: Path) -> None:
    events = write("e.csv", "user,item,ts\na,x,1\na,y,2\na,x,3\nb,p,1\nb,q,2\nb,r,3\n")
    targets = write("t.csv", "user_id,valid_item,test_item\na,x,x\nb,,p\n")
    ds = prepare(events, tmp_path / "out", targets=targets)
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["y", "x", "x"]
    assert ds.split[ds.offsets[0] : ds.offsets[1]].tolist() == [TRAIN, VALID, TEST]
    assert [ds.item_ids[i] for i in ds.sequence(1)] == ["q", "r", "p"]
    assert ds.split[ds.offsets[1] : ds.offsets[2]].tolist() == [TRAIN, TRAIN, TEST]  # no validation target


def test_targets_file_errors(write, tmp_path: Path) -> None:
    events = write("e.csv", "user,item,ts\na,x,1\na,y,2\n")
    with pytest.raises(DataError, match="needs columns user_id, valid_item, test_item"):
        prepare(events, tmp_path / "a", targets=write("t.csv", "user,item\na,x\n"))
    with pytest.raises(DataError, match="lists user a more than once"):
        prepare(events, tmp_path / "b", targets=write("u.csv", "user_id,valid_item,test_item\na,x,y\na,x,y\n"))
    with pytest.raises(ConfigError, match="--targets applies to the loo split only"):
        prepare(events, tmp_path / "c", split="temporal", targets=tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="--cutoff and --valid-cutoff apply"):
        prepare(events, tmp_path / "d", cutoff=0.5)
