"""Given examples: RecBole benchmark files read as listed, training sequences stitched without leakage, item
side information (item.json, .item, UniSRec .text), the amazon-industrial registration and its real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lmrec.data.dataset import PreparedDataset
from lmrec.data.given import Windows, stitch
from lmrec.data.items import list_text
from lmrec.data.prepare import prepare
from lmrec.data.registry import get_entry, resolve_source, sha256_file
from lmrec.errors import ConfigError, DataError

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
SPLITS = ("train", "valid", "test")


def minionerec_examples(sequences: dict[str, list[str]], seed: int = 0) -> dict[str, list[tuple]]:
    """MiniOneRec's preprocessing of full sequences: every event k >= 1 of a user is an example with the (at
    most 10) items before it, all examples sorted by time (random increasing times per user) and split
    globally 8:1:1. Returns each split's (user, history, target, k) rows in time order."""
    rng = np.random.default_rng(seed)
    rows = []
    for user, items in sequences.items():
        times = np.cumsum(rng.uniform(1, 100, len(items)))
        rows += [(times[k], (user, items[max(0, k - 10) : k], items[k], k)) for k in range(1, len(items))]
    rows.sort(key=lambda row: row[0])
    first, second = int(0.8 * len(rows)), int(0.9 * len(rows))
    parts = {"train": rows[:first], "valid": rows[first:second], "test": rows[second:]}
    return {split: [row for _, row in part] for split, part in parts.items()}


def write_benchmark(folder: Path, examples: dict[str, list[tuple]], name: str = "Toy") -> Path:
    """Write NAME.{train,valid,test}.inter files of (user, history, target, ...) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = "".join(f"{u}\t{' '.join(h)}\t{t}\n" for u, h, t, *_ in examples[split])
        (folder / f"{name}.{split}.inter").write_text(HEADER + lines)
    return folder


def random_sequences(n_users: int, n_items: int, seed: int = 0) -> dict[str, list[str]]:
    """Users with 2 to 30 purchases of items 0..n_items-1, repeats allowed (as in the real data)."""
    rng = np.random.default_rng(seed)
    return {str(u): [str(i) for i in rng.integers(0, n_items, int(rng.integers(2, 31)))] for u in range(n_users)}


def original(ds: PreparedDataset, items: np.ndarray) -> list[str]:
    return [str(i) for i in ds.item_ids[items]]


def test_given_examples_are_kept_as_listed(tmp_path: Path) -> None:
    examples = minionerec_examples(random_sequences(40, 25))
    ds = prepare(write_benchmark(tmp_path / "toy", examples), tmp_path / "out")
    split = ds.manifest["split"]
    assert ds.manifest["source"]["format"] == "recbole-benchmark" and ds.manifest["options"]["split"] == "given"
    assert ds.given and not ds.default_mask_history
    assert (split["method"], split["train_examples"], split["valid"], split["test"]) == (
        "given",
        len(examples["train"]),
        len(examples["valid"]),
        len(examples["test"]),
    )
    assert ds.manifest["dropped"] == {} and ds.manifest["examples"] == []
    for name in ("valid", "test"):
        targets = ds.targets(name)
        listed = [(u, h, t) for u, h, t, _ in examples[name]]
        found = [
            (str(ds.user_ids[targets.user[i]]), original(ds, targets.history(i)), str(ds.item_ids[targets.item[i]]))
            for i in range(len(targets))
        ]
        assert found == listed, "every example keeps its user, its history as given and its target, in file order"
        in_history = sum(t in h for _, h, t in listed)
        assert split[f"{name}_targets_in_history"] == in_history
    lines = pq.read_table(tmp_path / "out" / "examples.parquet").column("line").to_pylist()
    assert lines == list(range(2, len(examples["valid"]) + 2)) + list(range(2, len(examples["test"]) + 2))
    assert (ds.split == 0).all() and ds.manifest["interactions"] == len(ds.items)


def test_training_sequences_are_the_full_prefixes_and_hold_no_valid_or_test_target(tmp_path: Path) -> None:
    sequences = random_sequences(60, 30, seed=1)
    examples = minionerec_examples(sequences, seed=1)
    ds = prepare(write_benchmark(tmp_path / "toy", examples), tmp_path / "out")
    train_targets = {u: 0 for u in sequences}
    for u, *_ in examples["train"]:
        train_targets[u] += 1
    for u, full in sequences.items():
        expected = full[: 1 + train_targets[u]] if train_targets[u] else []
        assert original(ds, ds.train_sequence(ds.user_index[u])) == expected, "inter.json's prefix"
    # No leakage: the target of a valid or test example is event k of its user, beyond its training events.
    evaluated = [(u, k) for split in ("valid", "test") for u, _, _, k in examples[split]]
    assert evaluated and all(k >= len(ds.train_sequence(ds.user_index[u])) for u, k in evaluated)


def test_no_valid_or_test_target_event_is_a_training_input(tmp_path: Path) -> None:
    """With every event a distinct item, an event is known by its item: the training events are exactly the
    first event of each user with training examples and the training targets; no valid or test target."""
    rng = np.random.default_rng(2)
    counter = iter(range(10**6))
    sequences = {str(u): [f"e{next(counter)}" for _ in range(int(rng.integers(2, 25)))] for u in range(50)}
    examples = minionerec_examples(sequences, seed=2)
    ds = prepare(write_benchmark(tmp_path / "toy", examples), tmp_path / "out")
    training = original(ds, ds.items)
    firsts = {sequences[u][0] for u, *_ in examples["train"]}
    assert sorted(training) == sorted(firsts | {t for _, _, t, _ in examples["train"]})
    evaluated = {t for split in ("valid", "test") for _, _, t, _ in examples[split]}
    assert evaluated and not set(training) & evaluated


def test_stitched_windows_follow_their_users_and_newest_first_files_are_read_in_reverse(tmp_path: Path) -> None:
    sequences = random_sequences(30, 12, seed=3)
    examples = minionerec_examples(sequences, seed=3)
    forward = prepare(write_benchmark(tmp_path / "fwd", examples), tmp_path / "fwd_out")
    # UniSRec writes a user's training windows newest first: the same training sequences must come out.
    by_user: dict[str, list] = {}
    for row in examples["train"]:
        by_user.setdefault(row[0], []).append(row)
    reversed_train = [row for rows in by_user.values() for row in reversed(rows)]
    flipped = prepare(write_benchmark(tmp_path / "rev", {**examples, "train": reversed_train}), tmp_path / "rev_out")
    summary = flipped.manifest["split"]
    multi = sum(1 for rows in by_user.values() if len(rows) > 1)
    assert summary["users_train_newest_first"] == multi and summary["train_windows_inconsistent"] == 0
    for u in sequences:
        f, r = forward.user_index[u], flipped.user_index[u]
        assert original(forward, forward.train_sequence(f)) == original(flipped, flipped.train_sequence(r))


def test_stitch_on_arrays() -> None:
    # user 0: windows ([1], 2), ([1, 2], 3) train, ([2, 3], 4) test; user 1: only a valid window ([5], 6).
    windows = Windows(
        user=np.array([0, 0, 1, 0]),
        split=np.array([0, 0, 1, 2], dtype=np.int8),
        target=np.array([2, 3, 6, 4]),
        offsets=np.array([0, 1, 3, 4, 6]),
        items=np.array([1, 1, 2, 5, 2, 3]),
    )
    found = stitch(windows, 2)
    assert found.offsets.tolist() == [0, 3, 3] and found.items.tolist() == [1, 2, 3]
    assert not found.inconsistent.any() and not found.newest_first.any()
    bad = Windows(windows.user, windows.split, windows.target, windows.offsets, np.array([1, 1, 2, 5, 9, 3]))
    assert stitch(bad, 2).inconsistent.tolist() == [False, False, False, True]


def test_inconsistent_windows_are_counted_shown_and_kept(tmp_path: Path) -> None:
    examples = {
        "train": [("a", ["1"], "2"), ("a", ["1", "9"], "3"), ("b", ["4"], "5")],
        "valid": [("a", ["2", "3"], "4")],
        "test": [("a", ["7", "4"], "5"), ("b", ["4", "5"], "6")],
    }
    ds = prepare(write_benchmark(tmp_path / "toy", examples), tmp_path / "out")
    summary = ds.manifest["split"]
    assert (summary["train_windows_inconsistent"], summary["valid_windows_inconsistent"]) == (1, 0)
    assert summary["test_windows_inconsistent"] == 1
    shown = [(Path(e["file"]).name, e["line"], e["reason"]) for e in ds.manifest["examples"]]
    assert shown == [
        ("Toy.train.inter", 3, "inconsistent_train_window"),
        ("Toy.test.inter", 2, "inconsistent_test_window"),
    ]
    assert ds.manifest["examples"][0]["values"] == {"user_id": "a", "item_id_list": "1 9", "item_id": "3"}
    assert original(ds, ds.train_sequence(ds.user_index["a"])) == ["1", "2", "3"], "the target still trains"
    test = ds.targets("test")
    assert original(ds, test.history(0)) == ["7", "4"], "the example keeps its own history"


def test_bad_lines_are_counted_by_reason_with_file_and_line(tmp_path: Path) -> None:
    folder = write_benchmark(
        tmp_path / "toy",
        {"train": [("a", ["1"], "2"), ("b", ["1"], "3")], "valid": [("a", ["1", "2"], "3")], "test": [("b", [], "4")]},
    )
    train = folder / "Toy.train.inter"
    train.write_text(train.read_text() + "\t1\t5\nc\t1\t\n\nd\t1\t2\textra\n")
    ds = prepare(folder, tmp_path / "out")
    assert ds.manifest["dropped"] == {
        "malformed_too_many_columns": 1,
        "blank_line": 1,
        "missing_item": 1,
        "missing_user": 1,
        "users_without_examples": 1,
        "items_without_examples": 1,
    }
    assert ds.manifest["rows_read"] == 8
    shown = sorted((e["line"], e["reason"]) for e in ds.manifest["examples"])
    assert shown == [(4, "missing_user"), (5, "missing_item"), (6, "blank_line"), (7, "malformed_too_many_columns")]
    assert original(ds, ds.targets("test").history(0)) == [], "an empty history is an example like any other"
    with pytest.raises(DataError, match=r"line 4 of .*Toy.train.inter: missing user \(--strict"):
        prepare(folder, tmp_path / "strict", strict=True)


def test_list_looking_strings_become_plain_text_and_nothing_is_evaluated() -> None:
    assert list_text("['Sturdy.', 'Fits TR100', ' ', 'TR200']") == "Sturdy. Fits TR100, TR200"
    assert list_text("[['a', ['b']], 3, None]") == "a, b, 3"
    assert list_text("['line one \\nline two']") == "line one line two", "white space runs become one space"
    assert list_text("['it's sturdy', 'fits']") == "it's sturdy, fits", "not a literal: cut at its separators"
    assert list_text("[]") == ""
    for kept in ("[REC]", "plain", "['unterminated", "{'a': 1}", "[__import__('os').system('false')]"):
        assert list_text(kept) == kept


ITEM_JSON = """{
  "1": {
    "title": "Staples",
    "description": "['Heavy-duty staples.', 'Fits TR100', 'TR200']",
    "brand": "Stanley",
    "categories": ""
  },
  "2": {"title": "Relay", "description": "", "brand": "", "categories": ""},
  "3": "not an object",
  "2": {"title": "Relay again", "description": "[REC]", "brand": "x", "categories": ""},
  "4": {"title": "Glue", "description": ["A", " ", "B"], "brand": null, "categories": ""},
  "99": {"title": "Never bought", "description": "", "brand": "", "categories": ""}
}
"""


def test_item_json_gives_title_brand_and_cleaned_description(tmp_path: Path) -> None:
    folder = write_benchmark(
        tmp_path / "toy",
        {
            "train": [("a", ["1"], "2"), ("b", ["3"], "4")],
            "valid": [("a", ["1", "2"], "4")],
            "test": [("b", ["3", "4"], "1")],
        },
    )
    (folder / "Toy.item.json").write_text(ITEM_JSON)
    ds = prepare(folder, tmp_path / "out")
    text = ds.manifest["text"]
    assert text["template"] == "{title} | {brand} | {description}" and text["missing"] == 1
    assert dict(zip(ds.item_ids[1:], ds.item_text[1:], strict=True)) == {
        "1": "Staples | Stanley | Heavy-duty staples. Fits TR100, TR200",
        "2": "Relay |  | ",
        "3": None,
        "4": "Glue |  | A, B",
    }
    assert ds.item_title(1) == "Staples"
    assert text["chars"]["max"] == len("Staples | Stanley | Heavy-duty staples. Fits TR100, TR200")
    dropped = ds.manifest["dropped"]
    assert (dropped["items_table_malformed_entry"], dropped["items_table_duplicate_id"]) == (1, 1)
    assert dropped["items_table_without_events"] == 1
    shown = {(e["reason"], e["line"]) for e in ds.manifest["examples"]}
    assert shown == {("items_table_malformed_entry", 9), ("items_table_duplicate_id", 10)}


def test_item_json_that_is_not_an_object_of_objects_is_one_sentence(tmp_path: Path) -> None:
    folder = write_benchmark(
        tmp_path / "toy", {"train": [("a", ["1"], "2")], "valid": [], "test": [("a", ["1", "2"], "3")]}
    )
    for text, problem in (
        ("[1, 2]", "does not start with"),
        ('{"1": {"title": "x"}', "no ',' or '}'"),
        ("{1: {}}", "line 1"),
    ):
        (folder / "Toy.item.json").write_text(text)
        with pytest.raises(DataError, match=problem):
            prepare(folder, tmp_path / "out")


def test_recbole_item_and_unisrec_text_files(tmp_path: Path) -> None:
    examples = {"train": [("a", ["1"], "2")], "valid": [], "test": [("a", ["1", "2"], "3")]}
    folder = write_benchmark(tmp_path / "item", examples)
    (folder / "Toy.item").write_text(
        "item_id:token\ttitle:token_seq\tbrand:token\n1\tDrill\tBosch\n2\t['Saw', 'blade']\tMakita\n3\tTape\t\n"
    )
    ds = prepare(folder, tmp_path / "item_out")
    assert ds.item_text[1:] == ["Drill | Bosch", "Saw, blade | Makita", "Tape | "]
    for name, header in (("text_headed", "item_id:token\ttext:token_seq\n"), ("text_plain", "")):
        folder = write_benchmark(tmp_path / name, examples)
        (folder / "Toy.text").write_text(header + "1\tA drill.\n2\tA saw.\n3\t['Tape', 'roll']\n")
        ds = prepare(folder, tmp_path / f"{name}_out")
        assert ds.manifest["text"]["template"] == "{text}"
        assert ds.item_text[1:] == ["A drill.", "A saw.", "Tape, roll"]


def test_split_options_for_benchmark_and_other_sources(tmp_path: Path) -> None:
    examples = {"train": [("a", ["1"], "2")], "valid": [], "test": [("a", ["1", "2"], "3")]}
    folder = write_benchmark(tmp_path / "toy", examples)
    with pytest.raises(ConfigError, match="carry their own split; drop --split loo"):
        prepare(folder, tmp_path / "a", split="loo")
    with pytest.raises(ConfigError, match="--min-user-interactions does not apply to RecBole benchmark files"):
        prepare(folder, tmp_path / "b", min_user_interactions=5)
    csv = tmp_path / "e.csv"
    csv.write_text("user,item,ts\nu,a,1\nu,b,2\nu,c,3\n")
    with pytest.raises(ConfigError, match="--split given needs RecBole benchmark files"):
        prepare(csv, tmp_path / "c", split="given")
    assert prepare(folder / "Toy.test.inter", tmp_path / "d", split="given").given, "one of the files names them all"
    (folder / "Toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\t1\t1\nu\t2\t2\nu\t3\t3\n")
    assert prepare(folder, tmp_path / "e").manifest["split"]["method"] == "loo", "an atomic file is read by default"
    assert prepare(folder, tmp_path / "f", split="given").given
    (folder / "Toy.valid.inter").unlink()
    (folder / "Toy.inter").unlink()
    with pytest.raises(DataError, match=r"lack Toy\.valid\.inter"):
        prepare(folder, tmp_path / "g")


def test_files_without_a_usable_example_are_refused(tmp_path: Path) -> None:
    folder = write_benchmark(tmp_path / "toy", {"train": [], "valid": [], "test": [("", ["1"], "2")]})
    with pytest.raises(DataError, match=r"no usable example in the benchmark files of Toy \(missing_user 1"):
        prepare(folder, tmp_path / "out")


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    folder = write_benchmark(tmp_path / "toy", {"train": [("a", ["1"], "2")], "valid": [], "test": [("a", ["1"], "2")]})
    (folder / "Toy.valid.inter").write_text("user_id:token\titem_id:token\na\t2\n")
    with pytest.raises(DataError, match=r"Toy\.valid\.inter lacks column item_id_list"):
        prepare(folder, tmp_path / "out")


def test_cli_prepares_and_shows_a_benchmark_folder(tmp_path: Path, run_cli) -> None:
    examples = {"train": [("a", ["1"], "2"), ("a", ["1", "9"], "3")], "valid": [], "test": [("a", ["2", "3"], "2")]}
    folder = write_benchmark(tmp_path / "toy", examples)
    code, out, err = run_cli(["data", "prepare", str(folder), "--out", str(tmp_path / "out")])
    assert code == 0, err
    for shown in (
        "split: method",
        "given",
        "train windows inconsistent",
        "test targets in history",
        "Toy.train.inter:3",
    ):
        assert shown in out
    code, out, _ = run_cli(["data", "stats", str(tmp_path / "out")])
    assert code == 0 and "train examples" in out


def test_amazon_industrial_is_registered_with_its_files() -> None:
    entry = get_entry("amazon-industrial")
    assert entry.format == "recbole-benchmark" and "Ni" in entry.citation and "MiniOneRec" in entry.citation
    names = sorted(remote.filename for remote in entry.files)
    assert names == sorted(
        f"Industrial_and_Scientific.{suffix}"
        for suffix in ("item.json", "inter.json", "train.inter", "valid.inter", "test.inter")
    )
    assert all(
        remote.url.startswith("https://raw.githubusercontent.com/ZhangChen0212/MiniOneRec/d03130d8")
        for remote in entry.files
    )


def test_real_amazon_industrial(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = data_root / "amazon-industrial"
    if not folder.is_dir():
        pytest.skip(f"the MiniOneRec Industrial files are not at {folder}")
    monkeypatch.setenv("LMREC_DATA_DIR", str(data_root))
    assert resolve_source("amazon-industrial", download=False) == folder
    for remote in get_entry("amazon-industrial").files:
        path = folder / remote.filename
        assert (sha256_file(path), path.stat().st_size) == (remote.sha256, remote.size)
    ds = prepare("amazon-industrial", tmp_path / "ind")
    m = ds.manifest
    assert (ds.n_users, ds.n_items, m["dropped"]) == (7694, 3686, {})
    split = m["split"]
    assert (split["train_examples"], split["valid"], split["test"]) == (36_259, 4_532, 4_533)
    assert (len(ds.targets("valid")), len(ds.targets("test"))) == (4_532, 4_533)
    assert split["test_targets_in_history"] == 128
    assert sum(split[f"{s}_windows_inconsistent"] for s in SPLITS) == 0 and split["users_train_newest_first"] == 0
    assert m["text"]["missing"] == 0 and m["text"]["template"] == "{title} | {brand} | {description}"
    assert not any("['" in text for text in ds.item_text[1:]), "list-looking descriptions are cleaned"
    inter = json.loads((folder / "Industrial_and_Scientific.inter.json").read_text())
    for u in ds.user_ids[:200]:
        train = original(ds, ds.train_sequence(ds.user_index[u]))
        assert [str(i) for i in inter[u][: len(train)]] == train, (
            "the stitched training sequence is inter.json's prefix"
        )
