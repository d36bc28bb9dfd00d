"""Synthetic behaviour logs: counts, header, mixed timestamps, injected faults, determinism."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from lmrec.data.synth import COLUMNS, EVENT_TYPES, write_synthetic_log

EPOCH_S = re.compile(r"1[5-7]\d{8}")
EPOCH_MS = re.compile(r"1[5-7]\d{11}")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("synth") / "log.csv"
    return path, write_synthetic_log(path, users=60, items=300, events=5000, seed=7)


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _timestamp_kind(text: str) -> str | None:
    for kind, pattern in (("epoch_s", EPOCH_S), ("epoch_ms", EPOCH_MS), ("iso8601", ISO)):
        if pattern.fullmatch(text):
            if kind == "iso8601":
                datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
            return kind
    return None


def test_counts_and_header(small_log: tuple[Path, dict]) -> None:
    path, summary = small_log
    rows = _rows(path)

    assert rows[0] == list(COLUMNS)
    data = rows[1:]
    assert len(data) == summary["rows_written"] == 5000 + summary["duplicates"] + summary["malformed"]
    assert summary["duplicates"] == 5 and summary["malformed"] == 5
    good = [row for row in data if len(row) == 5 and _timestamp_kind(row[4])]
    assert len(good) == 5000 + summary["duplicates"]
    assert len({row[0] for row in good}) == summary["active_users"] == 60
    assert {row[1] for row in good} <= {f"i{i:06d}" for i in range(300)}
    assert all(re.fullmatch(r"u\d{6}", row[0]) for row in good)
    assert {row[2] for row in good} == set(EVENT_TYPES)
    assert all(float(row[3]) > 0 for row in good)


def test_duplicates_and_malformed_lines_are_present(small_log: tuple[Path, dict]) -> None:
    path, summary = small_log
    lines = path.read_text().splitlines()[1:]

    repeated = sum(count - 1 for count in Counter(lines).values() if count > 1)
    assert repeated >= summary["duplicates"] > 0
    wrong_width = [row for row in _rows(path)[1:] if len(row) != 5]
    bad_time = [row for row in _rows(path)[1:] if len(row) == 5 and _timestamp_kind(row[4]) is None]
    by_kind = summary["malformed_by_kind"]
    assert len(wrong_width) == by_kind["too_few_fields"] + by_kind["too_many_fields"]
    assert len(bad_time) == by_kind["bad_timestamp"]
    assert sum(by_kind.values()) == summary["malformed"]


def test_timestamps_are_mixed_and_in_range(small_log: tuple[Path, dict]) -> None:
    path, summary = small_log
    kinds = Counter(_timestamp_kind(row[4]) for row in _rows(path)[1:] if len(row) == 5)

    assert kinds["epoch_s"] > 0 and kinds["epoch_ms"] > 0 and kinds["iso8601"] > 0
    assert sum(summary["timestamp_formats"].values()) == 5000
    assert kinds["epoch_s"] > kinds["epoch_ms"]


def test_items_file_has_titles_and_categories(small_log: tuple[Path, dict]) -> None:
    _, summary = small_log
    rows = _rows(Path(summary["items_path"]))

    assert Path(summary["items_path"]).name == "log.items.csv"
    assert rows[0] == ["item_id", "title", "category"]
    assert len(rows) == 301
    assert all(len(title.split()) >= 3 for _, title, _ in rows[1:])
    assert len({category for _, _, category in rows[1:]}) == summary["categories"] > 1


def test_popularity_is_skewed(small_log: tuple[Path, dict]) -> None:
    path, _ = small_log
    counts = sorted(Counter(row[1] for row in _rows(path)[1:] if len(row) == 5).values(), reverse=True)

    assert sum(counts[:30]) > 0.3 * sum(counts), "the top 10% of items should draw a large share"


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("a.csv", "b.csv", "c.csv")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        write_synthetic_log(path, users=20, items=50, events=800, seed=seed)

    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert (tmp_path / "a.items.csv").read_bytes() == (tmp_path / "b.items.csv").read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_clean_log_without_faults(tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    summary = write_synthetic_log(path, 10, 30, 400, duplicate_rate=0, malformed_rate=0)
    lines = path.read_text().splitlines()[1:]

    assert summary["duplicates"] == summary["malformed"] == 0
    assert len(lines) == 400 and len(set(lines)) == 400


def test_more_users_than_events_and_empty_log(tmp_path: Path) -> None:
    summary = write_synthetic_log(tmp_path / "sparse.csv", users=100, items=10, events=20)
    assert summary["active_users"] <= 20

    empty = write_synthetic_log(tmp_path / "empty.csv", users=1, items=1, events=0)
    assert empty["rows_written"] == 0
    assert (tmp_path / "empty.csv").read_text() == ",".join(COLUMNS) + "\n"
    with pytest.raises(ValueError, match="users >= 1"):
        write_synthetic_log(tmp_path / "bad.csv", users=0, items=1, events=1)
