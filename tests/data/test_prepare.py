"""prepare(): the real ML-100K bars, the manifest, reuse and overwrite, atomic output, option errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from lmrec.data.dataset import PreparedDataset
from lmrec.data.prepare import PrepareOptions, fingerprint, prepare
from lmrec.errors import ConfigError, DataError


def test_ml100k_counts(data_root: Path, tmp_path: Path) -> None:
    ds = prepare(data_root / "ml-100k", tmp_path / "all")
    assert (ds.n_users, ds.n_items, len(ds.items)) == (943, 1682, 100_000)
    assert ds.manifest["name"] == "ml-100k" and ds.manifest["dropped"] == {}
    lengths = [len(text) for text in ds.item_text[1:]]
    assert ds.manifest["text"] == {
        "template": "{movie_title} ({release_year}) | {class}",
        "missing": 0,
        "columns": ["movie_title", "release_year", "class"],
        "chars": ds.manifest["text"]["chars"],
    }
    chars = ds.manifest["text"]["chars"]
    assert (chars["min"], chars["max"], chars["mean"]) == (min(lengths), max(lengths), round(sum(lengths) / 1682, 1))
    assert ds.item_text[1] == "Toy Story (1995) | Animation Children's Comedy"
    assert ds.manifest["sequence_length"]["min"] == 20 and ds.manifest["sequence_length"]["max"] == 737
    core = prepare(data_root / "ml-100k", tmp_path / "core", min_user_interactions=5, min_item_interactions=5)
    assert (core.n_users, core.n_items, len(core.items)) == (943, 1349, 99_287)


def test_ml100k_targets_file_gives_recbole_targets(data_root: Path, tmp_path: Path) -> None:
    targets = data_root / "ml-100k" / "recbole-loo-split.tsv"
    ds = prepare(data_root / "ml-100k", tmp_path / "out", targets=targets)
    with targets.open() as handle:
        expected = {
            row["user_id"]: (row["valid_item"], row["test_item"]) for row in csv.DictReader(handle, delimiter="\t")
        }
    valid, test = ds.targets("valid"), ds.targets("test")
    assert len(valid) == len(test) == 943
    got = {
        ds.user_ids[u]: (ds.item_ids[v], ds.item_ids[t])
        for u, v, t in zip(valid.user, valid.item, test.item, strict=True)
    }
    assert got == expected
    assert ds.manifest["split"]["targets_matched_users"] == 943


def test_manifest_layout_and_hashes(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts,rating\nu,a,1,5\nu,b,2,4\nv,a,3,3\n")
    ds = prepare(path, tmp_path / "out", min_value=3.5)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["format_version"] == 1
    assert (m["users"], m["items"], m["interactions"], m["rows_read"]) == (1, 2, 2, 3)
    assert m["source"]["sha256"] != m["source"]["files"][0]["sha256"]
    assert m["source"]["files"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["source"]["format"] == "csv" and m["name"] == "e"
    assert m["options"]["min_value"] == 3.5 and m["options"]["split"] == "loo"
    assert set(m["sequence_length"]) == {"min", "p25", "median", "p75", "p90", "max"}
    assert m["fingerprint"] == fingerprint(m["source"]["sha256"], PrepareOptions(min_value=3.5))
    assert {"split", "text", "created", "dropped", "examples"} <= set(m)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "interactions.parquet", "items.parquet", "manifest.json", "users.parquet",
    ]  # fmt: skip
    assert ds.fingerprint == m["fingerprint"]


def test_same_preparation_is_reused_and_conflicts_need_overwrite(write, tmp_path: Path, caplog) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\nu,b,2\n")
    out = tmp_path / "out"
    first = prepare(path, out).manifest
    with caplog.at_level("INFO", logger="lmrec"):
        again = prepare(path, out, strict=True).manifest
    assert again["created"] == first["created"] and again["fingerprint"] == first["fingerprint"]
    assert "reusing it" in caplog.text
    with pytest.raises(DataError, match=r"holds a different preparation.*--overwrite"):
        prepare(path, out, keep_repeats=True)
    replaced = prepare(path, out, keep_repeats=True, overwrite=True)
    assert replaced.fingerprint != first["fingerprint"]
    path.write_text("user,item,ts\nu,a,1\nu,c,2\n")
    with pytest.raises(DataError, match="holds a different preparation"):
        prepare(path, out, keep_repeats=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "out"]


def test_existing_folder_that_is_not_a_dataset_is_never_replaced(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\n")
    write("busy/notes.txt", "keep me")
    with pytest.raises(DataError, match="is not a prepared dataset"):
        prepare(path, tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert prepare(path, tmp_path / "empty").n_users == 1


def test_failed_preparation_leaves_nothing_behind(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\n")
    with pytest.raises(DataError):
        prepare(path, tmp_path / "out", text_template="{title}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv"]


def test_options_are_validated_in_one_sentence(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\n")
    with pytest.raises(ConfigError, match="unknown option --min-rating"):
        prepare(path, tmp_path / "a", min_rating=4)
    with pytest.raises(
        ConfigError, match="invalid --split: Input should be 'loo', 'temporal', 'cold-items' or 'given'"
    ):
        prepare(path, tmp_path / "b", split="random")
    with pytest.raises(ConfigError, match="invalid --min-user-interactions"):
        prepare(path, tmp_path / "c", min_user_interactions=-1)
    with pytest.raises(ConfigError, match="--text-template or --text-columns, not both"):
        prepare(path, tmp_path / "d", text_template="{a}", text_columns="a")
    with pytest.raises(ConfigError, match="--query applies to a database URL"):
        prepare(path, tmp_path / "e", query="SELECT 1")
    with pytest.raises(ConfigError, match="--delimiter apply to files"):
        prepare("sqlite:///x.db", tmp_path / "f", query="SELECT 1", delimiter=";")
    assert PrepareOptions(event_types="click, purchase").event_types == ("click", "purchase")


def test_missing_source_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.csv does not exist\."):
        prepare(tmp_path / "missing.csv", tmp_path / "out")


def test_prepared_dataset_round_trip(write, tmp_path: Path) -> None:
    write("e.csv", "user,item,ts\nu2,b,1\nu1,a,1\nu1,b,2\nu1,c,3\nu2,a,2\n")
    prepare(tmp_path / "e.csv", tmp_path / "out")
    ds = PreparedDataset.load(tmp_path / "out")
    assert list(ds.user_ids) == ["u1", "u2"] and list(ds.item_ids) == ["", "a", "b", "c"]
    assert ds.offsets.tolist() == [0, 3, 5]
    assert ds.train_sequence(0).tolist() == [1]
    assert ds.item_index == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("manifest.json", '{"format_version": 1, "fingerprint": [', "manifest.json is corrupt or unreadable"),
        ("manifest.json", "[1]", "does not hold a JSON object"),
        ("interactions.parquet", "PAR1 garbage", "interactions.parquet is missing or damaged"),
    ],
)
def test_a_damaged_prepared_dataset_is_one_sentence(tmp_path: Path, name: str, content: str, expected: str) -> None:
    from lmrec.data.synth import write_synthetic_log

    synth = tmp_path / "log.csv"
    write_synthetic_log(synth, 20, 10, 200, seed=0)
    prepare(synth, tmp_path / "d")
    (tmp_path / "d" / name).write_text(content)
    with pytest.raises(DataError, match=expected):
        PreparedDataset.load(tmp_path / "d")


def test_a_log_larger_than_the_memory_limit_prepares_by_spilling(tmp_path: Path, run_cli) -> None:
    log = tmp_path / "log.csv"
    synth = ["data", "synth", "--users", "15000", "--items", "8000", "--events", "3000000", "--out", str(log)]
    assert run_cli(synth)[0] == 0
    assert log.stat().st_size > 96 * 2**20  # the log alone is larger than DuckDB may hold
    spill = tmp_path / "spill"
    spill.mkdir()
    bounded = prepare(log, tmp_path / "bounded", memory_limit="96MB", temp_dir=spill)
    manifest = bounded.manifest
    assert manifest["resources"]["memory_limit"] == "96MB" and manifest["options"]["temp_dir"] == str(spill)
    assert manifest["interactions"] + sum(manifest["dropped"].values()) == manifest["rows_read"] > 3_000_000
    assert list(spill.iterdir()) == []  # the spill folder is cleaned up
    with pytest.raises(DataError, match=r"within DuckDB's memory limit .*raise --memory-limit"):
        prepare(log, tmp_path / "starved", memory_limit="8MB")


def test_a_memory_limit_that_is_not_a_size_is_one_sentence(write, tmp_path: Path) -> None:
    log = write("log.csv", "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\n")
    with pytest.raises(ConfigError, match=r"--memory-limit: .*'2 gigs' is not a size; write it like 512MB or 2GB"):
        prepare(log, tmp_path / "d", memory_limit="2 gigs")
