"""Amazon reviews 2018 and 2023: layout detection, column mapping, meta text, malformed lines, CLI, registry."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmrec.cli import main
from lmrec.data.dataset import PreparedDataset
from lmrec.data.prepare import prepare
from lmrec.data.readers import detect, guess_format
from lmrec.errors import DataError

REVIEWS_2018 = [
    {"reviewerID": "U1", "asin": "A", "overall": 5.0, "unixReviewTime": 1_500_000_000, "reviewTime": "07 14, 2017"},
    {"reviewerID": "U1", "asin": "B", "overall": 3.0, "unixReviewTime": 1_500_000_100, "reviewTime": "07 14, 2017"},
    "{not json",
    {"reviewerID": "U2", "asin": "B", "overall": 4.0, "unixReviewTime": 1_400_000_000, "reviewTime": "05 13, 2014"},
    {"reviewerID": "U2", "asin": "C", "overall": 1.0, "unixReviewTime": 1_400_000_050, "reviewTime": "05 13, 2014"},
]
META_2018 = [
    {"asin": "A", "title": "Shampoo", "brand": "Acme", "category": ["Beauty", "", "Hair"], "description": ["Mild"]},
    {"asin": "B", "title": "Brush", "category": [], "description": []},
    {"asin": "A", "title": "Shampoo again", "brand": "Other", "category": []},
    {"asin": "C", "title": "", "brand": " ", "category": [""]},
    {"asin": "Z", "title": "Never reviewed", "brand": "Nobody", "category": ["Beauty"]},
]
REVIEWS_2023 = [
    {"user_id": "X", "asin": "P1-red", "parent_asin": "P1", "rating": 5.0, "timestamp": 1_588_687_728_923},
    {"user_id": "X", "asin": "P2", "parent_asin": "P2", "rating": 2.0, "timestamp": 1_588_687_800_000},
    {"user_id": "Y", "asin": "P1-blue", "parent_asin": "P1", "rating": 4.0, "timestamp": 1_600_000_000_000},
    "",
    "[1, 2]",
]
META_2023 = [
    {
        "parent_asin": "P1",
        "title": "Lipstick",
        "main_category": "All Beauty",
        "store": "Glow",
        "categories": ["Beauty", "Makeup"],
        "features": ["Matte", "Red"],
        "details": {"Color": "Red"},
    },
    {"parent_asin": "P2", "title": "Comb", "categories": [], "features": []},
]


def _lines(path: Path, rows: list[dict | str]) -> Path:
    """Write rows (dicts as JSON, strings as they are) one per line, gzipped when the name ends in .gz."""
    text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def _amazon_2018(folder: Path) -> Path:
    _lines(folder / "All_Beauty_5.json.gz", REVIEWS_2018)
    _lines(folder / "meta_All_Beauty.json.gz", META_2018)
    return folder


def _amazon_2023(folder: Path, suffix: str = ".jsonl.gz") -> Path:
    _lines(folder / f"All_Beauty{suffix}", REVIEWS_2023)
    _lines(folder / f"meta_All_Beauty{suffix}", META_2023)
    return folder


def test_2018_folder_is_detected_and_prepared(tmp_path: Path) -> None:
    folder = _amazon_2018(tmp_path / "beauty")
    assert guess_format(folder) == "amazon"
    assert guess_format(folder / "All_Beauty_5.json.gz") == "amazon"
    layout = detect(folder)
    assert layout.items is not None and layout.items.path.name == "meta_All_Beauty.json.gz"
    ds = prepare(folder, tmp_path / "out")
    m = ds.manifest
    assert m["source"]["format"] == "amazon" and m["name"] == "beauty"
    assert (ds.n_users, ds.n_items, len(ds.items), m["rows_read"]) == (2, 3, 4, 5)
    assert m["columns"] == {
        "user": "reviewerID",
        "item": "asin",
        "time": "unixReviewTime",
        "type": None,
        "value": "overall",
    }
    assert sorted(ds.timestamps.tolist()) == [1_400_000_000, 1_400_000_050, 1_500_000_000, 1_500_000_100]
    assert m["dropped"]["malformed_json"] == 1 and m["examples"][0]["line"] == 3
    assert m["dropped"]["items_table_duplicate_id"] == 1 and m["dropped"]["items_table_without_events"] == 1
    assert m["text"] == {
        "template": "{title} | {brand} | {category}",
        "missing": 1,
        "columns": ["title", "brand", "category"],
        "chars": {"min": 11, "p25": 11, "median": 11, "p75": 29, "p90": 29, "max": 29, "mean": 20.0},
    }
    assert dict(zip(ds.item_ids[1:], ds.item_text[1:], strict=True)) == {
        "A": "Shampoo | Acme | Beauty, Hair",
        "B": "Brush |  | ",
        "C": None,
    }
    assert ds.item_table.column("description").to_pylist() == ["Mild", "", None]


def test_2023_folder_joins_on_parent_asin_with_millisecond_timestamps(tmp_path: Path) -> None:
    folder = _amazon_2023(tmp_path / "beauty23")
    assert guess_format(folder) == "amazon"
    ds = prepare(folder, tmp_path / "out", text_template="{title}: {features} ({main_category})")
    m = ds.manifest
    assert m["columns"]["item"] == "parent_asin" and m["columns"]["time"] == "timestamp"
    assert m["columns"]["user"] == "user_id" and m["columns"]["value"] == "rating"
    assert (ds.n_users, ds.n_items, len(ds.items)) == (2, 2, 3)
    assert list(ds.item_ids[1:]) == ["P1", "P2"]
    assert sorted(ds.timestamps.tolist()) == pytest.approx([1_588_687_728.923, 1_588_687_800.0, 1_600_000_000.0])
    assert m["dropped"] == {"blank_line": 1, "malformed_json": 1}
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [(4, "blank_line"), (5, "malformed_json")]
    assert ds.item_text[1:] == ["Lipstick: Matte, Red (All Beauty)", "Comb:  ()"]
    default = prepare(folder, tmp_path / "default")
    assert default.manifest["text"]["template"] == "{title} | {store} | {categories}"
    assert default.item_text[1:] == ["Lipstick | Glow | Beauty, Makeup", "Comb |  | "]


def test_plain_json_lines_file_and_format_option(tmp_path: Path) -> None:
    folder = _amazon_2023(tmp_path / "plain", suffix=".jsonl")
    review = folder / "All_Beauty.jsonl"
    assert guess_format(review) == "amazon"
    ds = prepare(review, tmp_path / "out", format="amazon")
    assert ds.manifest["name"] == "All_Beauty" and ds.item_text[1] == "Lipstick | Glow | Beauty, Makeup"
    lone = _lines(tmp_path / "lone" / "events.jsonl", REVIEWS_2023)
    assert guess_format(lone) == "jsonl"
    assert prepare(lone, tmp_path / "lone_out", format="amazon").manifest["text"]["template"] is None
    with pytest.raises(DataError, match="is an Amazon metadata file"):
        prepare(folder / "meta_All_Beauty.jsonl", tmp_path / "meta_out")


def test_cli_prepares_an_amazon_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _amazon_2018(tmp_path / "beauty")
    try:
        main(["data", "prepare", str(folder), "--out", str(tmp_path / "out")])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "malformed json" in captured.out
    assert PreparedDataset(tmp_path / "out").n_users == 2


def test_registry_name_resolves_to_a_data_dir_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _amazon_2018(tmp_path / "data" / "amazon-2018-all-beauty")
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "data"))
    ds = prepare("amazon-2018-all-beauty", tmp_path / "out")
    assert ds.manifest["name"] == "amazon-2018-all-beauty" and ds.manifest["source"]["format"] == "amazon"
    assert {f["role"] for f in ds.manifest["source"]["files"]} == {"events", "items"}
    assert ds.n_items == 3
