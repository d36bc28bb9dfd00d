"""Cleaning: every drop reason is counted, bad rows are shown with their line, ids and order are right."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lmrec.data.prepare import prepare
from lmrec.errors import DataError

HEADER = "user,item,ts,type,rating\n"


def _items(ds, user: int = 0) -> list[str]:
    return [ds.item_ids[i] for i in ds.sequence(user)]


def test_every_row_level_reason_is_counted_with_examples(write, tmp_path: Path) -> None:
    rows = [
        "u1,a,1,click,5",  # 2 kept
        ",a,2,click,5",  # 3 missing_user
        "u1,,3,click,5",  # 4 missing_item
        "u1,b,,click,5",  # 5 missing_timestamp
        "u1,b,yesterday,click,5",  # 6 unparsable_timestamp
        "u1,b,4,click,five",  # 7 unparsable_value
        "u1,b,5,click",  # 8 malformed: missing columns
        "u1,b,6,click,5,extra",  # 9 malformed: too many columns
        "u1,a,1,click,5",  # 10 duplicate of line 2
        "u1,c,7,view,5",  # 11 event_type_filtered
        "u1,d,8,click,2",  # 12 below_min_value
        "u1,e,9,click,",  # 13 below_min_value (no value)
        "u2,z,10,click,nan",  # 14 unparsable_value (not finite)
        "u1,f,11,click,4",  # 15 kept
    ]
    ds = prepare(
        write("e.csv", HEADER + "\n".join(rows) + "\n"),
        tmp_path / "out",
        event_types="click,purchase",
        min_value=4,
    )
    m = ds.manifest
    assert m["rows_read"] == 14
    assert m["dropped"] == {
        "malformed_missing_columns": 1,
        "malformed_too_many_columns": 1,
        "missing_user": 1,
        "missing_item": 1,
        "missing_timestamp": 1,
        "unparsable_timestamp": 1,
        "unparsable_value": 2,
        "duplicate": 1,
        "event_type_filtered": 1,
        "below_min_value": 2,
        "users_without_events": 1,
        "items_without_events": 5,
    }
    assert (m["users"], m["items"], m["interactions"]) == (1, 2, 2)
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [
        (3, "missing_user"),
        (4, "missing_item"),
        (5, "missing_timestamp"),
        (6, "unparsable_timestamp"),
        (7, "unparsable_value"),
        (8, "malformed_missing_columns"),
        (9, "malformed_too_many_columns"),
        (10, "duplicate"),
        (11, "event_type_filtered"),
        (12, "below_min_value"),
    ]
    assert m["examples"][3]["values"] == {"user": "u1", "item": "b", "ts": "yesterday", "type": "click", "rating": "5"}
    assert m["examples"][5]["text"] == "u1,b,5,click"
    assert sum(m["dropped"][r] for r in m["dropped"] if not r.endswith("_events")) + m["interactions"] == 14


def test_only_the_first_ten_bad_rows_are_examples(write, tmp_path: Path) -> None:
    rows = "".join(f"u,i{n},,x,1\n" for n in range(15)) + "u,a,1,x,1\n"
    ds = prepare(write("e.csv", HEADER + rows), tmp_path / "out")
    assert ds.manifest["dropped"]["missing_timestamp"] == 15
    assert [e["line"] for e in ds.manifest["examples"]] == list(range(2, 12))


def test_lines_after_malformed_lines_keep_their_file_line(write, tmp_path: Path) -> None:
    rows = ["u,a,1,x,1", "broken", "u,b,,x,1", "too,many,fields,here,1,2", "u,c,bad,x,1"]
    ds = prepare(write("e.csv", HEADER + "\n".join(rows) + "\n"), tmp_path / "out")
    assert [(e["line"], e["reason"]) for e in ds.manifest["examples"]] == [
        (3, "malformed_missing_columns"),
        (4, "missing_timestamp"),
        (5, "malformed_too_many_columns"),
        (6, "unparsable_timestamp"),
    ]


def test_blank_line_is_counted_and_later_lines_keep_their_file_line(write, tmp_path: Path) -> None:
    # 406 data lines (file lines 2..407): a blank line at 100, `not-a-time` at 404, a duplicate of line 2 at 407.
    rows = [f"u{n % 7},i{n},{n}" for n in range(2, 408)]
    rows[100 - 2] = ""
    rows[404 - 2] = "u1,i404,not-a-time"
    rows[407 - 2] = rows[0]
    ds = prepare(write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"), tmp_path / "out")
    m = ds.manifest
    assert m["rows_read"] == 406
    assert m["dropped"] == {"blank_line": 1, "unparsable_timestamp": 1, "duplicate": 1, "items_without_events": 1}
    assert m["interactions"] == 403
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [
        (100, "blank_line"),
        (404, "unparsable_timestamp"),
        (407, "duplicate"),
    ]
    assert m["examples"][2]["values"] == {"user": "u2", "item": "i2", "ts": "2"}


def test_multi_line_quoted_fields_and_crlf_blank_lines_keep_file_lines(write, tmp_path: Path) -> None:
    lines = [
        "user,item,ts,note",  # 1
        "u,a,1,plain",  # 2
        'u,b,2,"first paragraph',  # 3
        "",  # 4: inside the quoted field, not a blank line
        'second paragraph"',  # 5
        "",  # 6: blank
        "u,c,,x",  # 7: missing timestamp
        "u,d",  # 8: malformed
        "u,e,bad,x",  # 9: unparsable timestamp
    ]
    ds = prepare(write("e.csv", "\r\n".join(lines) + "\r\n"), tmp_path / "out")
    m = ds.manifest
    assert m["rows_read"] == 6  # records: lines 2, 3-5, 6 (blank), 7, 8, 9
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [
        (6, "blank_line"),
        (7, "missing_timestamp"),
        (8, "malformed_missing_columns"),
        (9, "unparsable_timestamp"),
    ]
    assert _items(ds) == ["a", "b"]


def test_examples_show_every_reason_before_more_of_one(write, tmp_path: Path) -> None:
    rows = [f"u{n},i{n},," for n in range(12)]  # lines 2..13: missing timestamps
    rows += ["u,a,1", "u,a,1", "u,b,2", "u,d,3", "x,a,4", "x,b,5", "v,c,6"]  # 14..20: a duplicate at 15
    rows += ["", "u,e,7,extra"]  # 21 blank, 22 malformed
    ds = prepare(
        write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"),
        tmp_path / "out",
        min_user_interactions=2,
        min_item_interactions=2,
    )
    m = ds.manifest
    reasons = {e["reason"] for e in m["examples"]}
    assert reasons == {
        "missing_timestamp",
        "duplicate",
        "blank_line",
        "malformed_too_many_columns",
        "min_user_interactions",
        "min_item_interactions",
    }
    assert set(m["dropped"]) - reasons == {"users_without_events", "items_without_events"}
    assert len(m["examples"]) == 10
    lines = [e["line"] for e in m["examples"]]
    assert lines == sorted(lines) and lines[:4] == [2, 3, 4, 5]
    assert (15, "duplicate") in [(e["line"], e["reason"]) for e in m["examples"]]
    assert (21, "blank_line") in [(e["line"], e["reason"]) for e in m["examples"]]
    assert {(17, "min_item_interactions"), (20, "min_user_interactions")} <= {
        (e["line"], e["reason"]) for e in m["examples"]
    }


def test_strict_ignores_blank_lines(write, tmp_path: Path) -> None:
    path = write("e.csv", HEADER + "u,a,1,x,1\n\nu,b,2,x,1\nu,c,,x,1\n")
    with pytest.raises(DataError, match=r"^line 5 of .*: missing timestamp"):
        prepare(path, tmp_path / "out", strict=True)


def test_strict_stops_at_the_first_bad_row(write, tmp_path: Path) -> None:
    path = write("e.csv", HEADER + "u,a,1,x,1\nu,b,2,x,1\nu,c,,x,1\nu,d\n")
    with pytest.raises(DataError, match=r"^line 4 of .*e\.csv: missing timestamp \(--strict"):
        prepare(path, tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [path]


def test_timestamps_seconds_milliseconds_and_iso_mixed(write, tmp_path: Path) -> None:
    rows = [
        "u,a,1577836800",
        "u,b,1577836801000",
        "u,c,2020-01-01T00:00:02Z",
        "u,d,2020-01-01 00:00:03+00:00",
        "u,e,2020-01-01T02:00:04+02:00",
        "u,f,1577836805.5",
        "u,g,2020-01-02",
    ]
    ds = prepare(write("e.csv", "user,item,timestamp\n" + "\n".join(rows) + "\n"), tmp_path / "out")
    assert ds.timestamps.tolist() == [
        1577836800.0, 1577836801.0, 1577836802.0, 1577836803.0, 1577836804.0, 1577836805.5, 1577923200.0,
    ]  # fmt: skip
    assert _items(ds) == list("abcdefg")


def test_keep_repeats_keeps_exact_duplicates(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\nu,a,1\nu,b,2\nu,a,3\n")
    assert prepare(path, tmp_path / "a").manifest["dropped"] == {"duplicate": 1}
    kept = prepare(path, tmp_path / "b", keep_repeats=True)
    assert kept.manifest["dropped"] == {}
    assert _items(kept) == ["a", "a", "b", "a"]


def test_duplicates_differ_by_type_or_value(write, tmp_path: Path) -> None:
    path = write("e.csv", HEADER + "u,a,1,view,\nu,a,1,click,\nu,a,1,click,\nu,a,1,click,3\n")
    ds = prepare(path, tmp_path / "out")
    assert ds.manifest["dropped"] == {"duplicate": 1}
    assert pq.read_table(tmp_path / "out" / "interactions.parquet").column("event_type").to_pylist() == [
        "view", "click", "click",
    ]  # fmt: skip


def test_k_core_is_iterated_until_stable(write, tmp_path: Path) -> None:
    # At k=2: dropping u3 and u5 (1 event each) leaves item c with 1 event; dropping c leaves u2 with
    # 1 event, so u2 goes in a second round; u1 and u4 with items a and b remain.
    rows = ["u1,a,1", "u1,b,2", "u2,a,3", "u2,c,4", "u3,c,5", "u4,b,6", "u4,a,7", "u5,d,8"]
    ds = prepare(
        write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"),
        tmp_path / "out",
        min_user_interactions=2,
        min_item_interactions=2,
    )
    assert list(ds.user_ids) == ["u1", "u4"]
    assert ds.manifest["dropped"] == {
        "min_user_interactions": 3,
        "min_item_interactions": 1,
        "users_without_events": 3,
        "items_without_events": 2,
    }
    lengths = ds.lengths
    counts = [int((ds.items == i).sum()) for i in range(1, ds.n_items + 1)]
    assert min(lengths) >= 2 and min(counts) >= 2


def test_ids_are_indexed_numerically_or_lexicographically(write, tmp_path: Path) -> None:
    numeric = prepare(write("n.csv", "user,item,ts\n10,9,1\n9,10,2\n100,2,3\n"), tmp_path / "a")
    assert list(numeric.user_ids) == ["9", "10", "100"]
    assert list(numeric.item_ids[1:]) == ["2", "9", "10"]
    mixed = prepare(write("m.csv", "user,item,ts\n10,b,1\n9,a,2\nx,c,3\n"), tmp_path / "b")
    assert list(mixed.user_ids) == ["10", "9", "x"]


def test_ties_broken_by_row_or_item(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,ts\nu,30,5\nu,4,5\nu,200,5\nu,1,1\n")
    assert _items(prepare(path, tmp_path / "a")) == ["1", "30", "4", "200"]
    assert _items(prepare(path, tmp_path / "b", tie_break="item")) == ["1", "4", "30", "200"]


def test_nothing_left_after_filtering_is_one_sentence(write, tmp_path: Path) -> None:
    path = write("e.csv", HEADER + "u,a,1,view,1\nu,b,2,view,1\n")
    with pytest.raises(DataError, match=r"no events left .*\(dropped: event_type_filtered 2, "):
        prepare(path, tmp_path / "out", event_types="purchase")
    with pytest.raises(DataError, match="no event type column found"):
        prepare(write("f.csv", "user,item,ts\nu,a,1\n"), tmp_path / "out", event_types="purchase")


def test_header_only_and_empty_files(write, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no data rows"):
        prepare(write("h.csv", "user,item,ts\n"), tmp_path / "a")
    with pytest.raises(DataError, match="is empty"):
        prepare(write("e.csv", ""), tmp_path / "b")
