"""Each reader on a tiny fixture: formats, layouts, encodings, column mapping and side tables."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.data.dataset import PreparedDataset
from lmrec.data.prepare import prepare
from lmrec.data.sql import _text_batches
from lmrec.errors import DataError

EVENTS = [("u1", "a", 100), ("u1", "b", 200), ("u2", "a", 150), ("u2", "c", 300), ("u2", "b", 400)]


def _csv(delimiter: str, header: str = "user_id{d}item_id{d}timestamp\n") -> str:
    body = "".join(f"{u}{delimiter}{i}{delimiter}{t}\n" for u, i, t in EVENTS)
    return header.format(d=delimiter) + body


def _sequences(ds: PreparedDataset) -> dict[str, list[str]]:
    return {ds.user_ids[u]: [ds.item_ids[i] for i in ds.sequence(u)] for u in range(ds.n_users)}


EXPECTED = {"u1": ["a", "b"], "u2": ["a", "c", "b"]}


def test_csv_with_semicolon_delimiter_is_sniffed(write, tmp_path: Path) -> None:
    ds = prepare(write("events.csv", _csv(";")), tmp_path / "out")
    assert _sequences(ds) == EXPECTED
    assert ds.manifest["source"]["format"] == "csv"
    assert ds.manifest["columns"] == {
        "user": "user_id", "item": "item_id", "time": "timestamp", "type": None, "value": None,
    }  # fmt: skip


def test_explicit_delimiter_and_tsv_extension(write, tmp_path: Path) -> None:
    assert _sequences(prepare(write("e.tsv", _csv("\t")), tmp_path / "a")) == EXPECTED
    assert _sequences(prepare(write("e.txt", _csv("|")), tmp_path / "b", delimiter="|")) == EXPECTED


def test_headerless_file_needs_columns(write, tmp_path: Path) -> None:
    path = write("nohead.csv", _csv(",", header=""))
    with pytest.raises(DataError, match=r"columns: u1, a, 100\); .*no header line.*--columns"):
        prepare(path, tmp_path / "a")
    numeric = write("numeric.csv", "1,10,100\n2,20,200\n")
    with pytest.raises(DataError, match=r"first line .* looks like data \(1, 10, 100\).*--columns"):
        prepare(numeric, tmp_path / "b")
    ds = prepare(path, tmp_path / "c", columns="user,item,timestamp")
    assert _sequences(ds) == EXPECTED
    with pytest.raises(DataError, match="3 columns per line but 2 column names"):
        prepare(path, tmp_path / "d", columns="user,item")


def test_parquet_keeps_native_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "uid": pa.array([1, 1, 2, 2, 2], pa.int64()),
            "iid": ["a", "b", "a", "c", "b"],
            "time": pa.array([100, 200, 150, 300, 400], pa.int32()),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    ds = prepare(tmp_path / "e.parquet", tmp_path / "out")
    assert _sequences(ds) == {"1": EXPECTED["u1"], "2": EXPECTED["u2"]}


def test_jsonl_counts_malformed_lines_with_line_numbers(write, tmp_path: Path) -> None:
    lines = [
        '{"user_id": "u1", "item_id": "a", "ts": 100}',
        '{"user_id": "u1", "item_id": "b", "ts": "1970-01-01T00:03:20Z"}',
        "{not json",
        "",
        '{"user_id": "u2", "item_id": "a", "ts": 150, "extra": {"k": 1}}',
        "[1, 2]",
        '{"user_id": "u2", "item_id": "c", "ts": 300}',
        '{"user_id": "u2", "item_id": "b", "ts": 400}',
    ]
    ds = prepare(write("e.jsonl", "\n".join(lines) + "\n"), tmp_path / "out")
    assert _sequences(ds) == EXPECTED
    assert ds.manifest["dropped"] == {"malformed_json": 2, "blank_line": 1}
    assert ds.manifest["rows_read"] == 8
    assert [(e["line"], e["reason"]) for e in ds.manifest["examples"]] == [
        (3, "malformed_json"),
        (4, "blank_line"),
        (6, "malformed_json"),
    ]


def test_sqlite_url_through_sqlalchemy(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE ev (customer_id INTEGER, product_id TEXT, event_time TEXT)")
        con.executemany("INSERT INTO ev VALUES (?, ?, ?)", [(1, "p1", "2020-01-02"), (1, "p2", "2020-01-01")])
    ds = prepare(f"sqlite:///{db}", tmp_path / "out", query="SELECT * FROM ev")
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["p2", "p1"]
    assert ds.manifest["source"]["format"] == "sql" and ds.manifest["name"] == "events"


def test_duckdb_url(tmp_path: Path) -> None:
    db = tmp_path / "log.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE ev AS SELECT * FROM (VALUES (1, 'x', TIMESTAMP '2020-01-01 10:00:00'), "
            "(1, 'y', TIMESTAMP '2020-01-01 09:00:00')) t(visitor_id, article_id, datetime)"
        )
    ds = prepare(f"duckdb:///{db}", tmp_path / "out", query="SELECT * FROM ev")
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["y", "x"]
    assert ds.timestamps[0] == pytest.approx(1577869200.0)


def test_sql_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        prepare(f"sqlite:///{tmp_path}/missing.db", tmp_path / "a", query="SELECT 1")
    db = tmp_path / "e.db"
    sqlite3.connect(db).close()
    with pytest.raises(DataError, match="the query failed"):
        prepare(f"sqlite:///{db}", tmp_path / "b", query="SELECT * FROM nope")
    with pytest.raises(DataError, match="needs a query"):
        prepare(f"sqlite:///{db}", tmp_path / "c")
    with pytest.raises(DataError, match=r"the query failed on postgresql://\.\.\."):
        prepare("postgresql://u:pw@host:port/db", tmp_path / "d", query="SELECT 1")


def test_latin1_csv_is_refused_naming_the_encoding_option(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,time\nJosé,a,1\nJosé,b,2\nJo,c,3\n", encoding="latin-1")
    with pytest.raises(
        DataError, match=r"e\.csv is not valid UTF-8 \(2 undecodable lines, the first at line 2\); .*--encoding latin-1"
    ):
        prepare(path, tmp_path / "a")
    counted = prepare(path, tmp_path / "b", encoding="utf-8")
    assert counted.manifest["dropped"]["malformed_invalid_encoding"] == 2
    assert [e["line"] for e in counted.manifest["examples"]] == [2, 3]
    ds = prepare(path, tmp_path / "c", encoding="latin-1")
    assert list(ds.user_ids) == ["Jo", "José"]


def test_latin1_jsonl_and_recbole_files_take_the_encoding_option(write, tmp_path: Path) -> None:
    jsonl = write("e.jsonl", '{"user_id": "José", "item_id": "a", "ts": 1}\n', encoding="latin-1")
    with pytest.raises(DataError, match=r"not valid UTF-8 .*--encoding latin-1"):
        prepare(jsonl, tmp_path / "a")
    assert list(prepare(jsonl, tmp_path / "b", encoding="latin-1").user_ids) == ["José"]
    write("toy/toy.inter", "user_id:token\titem_id:token\ttimestamp:float\nJosé\t7\t10\n", encoding="latin-1")
    write("toy/toy.item", "item_id:token\ttitle:token_seq\n7\tCafé\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"toy\.inter is not valid UTF-8 .*--encoding latin-1"):
        prepare(tmp_path / "toy", tmp_path / "c")
    ds = prepare(tmp_path / "toy", tmp_path / "d", encoding="latin-1")
    assert list(ds.user_ids) == ["José"] and ds.item_text[1:] == ["Café"]


def test_overlong_line_is_one_malformed_row_at_its_file_line(write, tmp_path: Path) -> None:
    rows = [f"u{n % 3},i{n},{n}" for n in range(2, 101)]  # file lines 2..100
    rows[51 - 2] = "u1," + "x" * 3_000_000 + ",51"
    rows[60 - 2] = "u1,i60,not-a-time"
    ds = prepare(write("e.csv", "user,item,ts\n" + "\n".join(rows) + "\n"), tmp_path / "out")
    m = ds.manifest
    assert m["rows_read"] == 99 and m["interactions"] == 97
    assert m["dropped"] == {
        "malformed_line_size_over_maximum": 1,
        "unparsable_timestamp": 1,
        "items_without_events": 1,  # i60, seen only on its unparsable row
    }
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [
        (51, "malformed_line_size_over_maximum"),
        (60, "unparsable_timestamp"),
    ]
    assert m["examples"][0]["text"] == "u1," + "x" * 197


def test_jsonl_lines_keep_their_file_line_after_overlong_and_blank_lines(write, tmp_path: Path) -> None:
    lines = [json.dumps({"user_id": f"u{n % 3}", "item_id": f"i{n}", "ts": n}) for n in range(1, 61)]
    lines[10 - 1] = json.dumps({"user_id": "u1", "item_id": "x" * 3_000_000, "ts": 10})
    lines[20 - 1] = ""
    lines[30 - 1] = json.dumps({"user_id": "u1", "item_id": "i30", "ts": "not-a-time"})
    ds = prepare(write("e.jsonl", "\n".join(lines) + "\n"), tmp_path / "out")
    m = ds.manifest
    assert m["rows_read"] == 60 and m["interactions"] == 57
    assert m["dropped"] == {
        "malformed_line_size_over_maximum": 1,
        "blank_line": 1,
        "unparsable_timestamp": 1,
        "items_without_events": 1,
    }
    assert [(e["line"], e["reason"]) for e in m["examples"]] == [
        (10, "malformed_line_size_over_maximum"),
        (20, "blank_line"),
        (30, "unparsable_timestamp"),
    ]


def test_parquet_list_id_column_is_refused_naming_column_and_type(tmp_path: Path) -> None:
    table = pa.table({"user_id": ["u", "u"], "item_id": [[0, 0], [1]], "ts": [1, 2]})
    pq.write_table(table, tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"item column 'item_id' of .*e\.parquet holds BIGINT\[\] values"):
        prepare(tmp_path / "e.parquet", tmp_path / "a")
    structs = pa.table({"user_id": [{"id": 1}], "item_id": ["a"], "ts": [1]})
    pq.write_table(structs, tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"user column 'user_id' .* holds STRUCT\(id BIGINT\) values"):
        prepare(tmp_path / "s.parquet", tmp_path / "b")
    values = pa.table({"user_id": ["u"], "item_id": ["a"], "ts": [1], "rating": [[5.0]]})
    pq.write_table(values, tmp_path / "v.parquet")
    with pytest.raises(DataError, match=r"value column 'rating' .* holds DOUBLE\[\] values.*--value-col"):
        prepare(tmp_path / "v.parquet", tmp_path / "c")


def test_non_scalar_ids_are_refused_in_jsonl_sql_and_items_tables(write, tmp_path: Path) -> None:
    jsonl = write(
        "e.jsonl", '{"user_id": "u", "item_id": "a", "ts": 1}\n{"user_id": "u", "item_id": [0, 0], "ts": 2}\n'
    )
    with pytest.raises(DataError, match=r"item column 'item_id' of .*e\.jsonl holds JSON array values"):
        prepare(jsonl, tmp_path / "a")
    db = tmp_path / "log.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE ev AS SELECT 'u' AS user_id, [1, 2] AS item_id, 1 AS ts")
    with pytest.raises(DataError, match=r"item column 'item_id' of duckdb:///.* holds INTEGER\[\] values"):
        prepare(f"duckdb:///{db}", tmp_path / "b", query="SELECT * FROM ev")
    events = write("ok.csv", "user_id,item_id,ts\nu,1,1\n")
    pq.write_table(pa.table({"item_id": [[1]], "title": ["One"]}), tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"id column 'item_id' of the items table .* holds BIGINT\[\] values"):
        prepare(events, tmp_path / "c", items=tmp_path / "items.parquet")


def test_sqlalchemy_rows_note_container_columns() -> None:
    class Result:
        def partitions(self, size: int):
            yield [("u", [0, 0], 1), ("v", None, 2)]

    schema = pa.schema([(name, pa.string()) for name in ("user_id", "item_id", "ts")])
    containers: dict[str, str] = {}
    (batch,) = list(_text_batches(Result(), schema, containers))
    assert containers == {"item_id": "Python list"}
    assert batch.column(1).to_pylist() == ["[0, 0]", None]


def test_column_guesses_and_explicit_names(write, tmp_path: Path) -> None:
    path = write("e.csv", "visitor_id,article_id,event_time,behavior,score\nv,a,1,click,2\nv,b,2,buy,3\n")
    ds = prepare(path, tmp_path / "a")
    assert ds.manifest["columns"] == {
        "user": "visitor_id", "item": "article_id", "time": "event_time", "type": "behavior", "value": "score",
    }  # fmt: skip
    table = pq.read_table(tmp_path / "a" / "interactions.parquet")
    assert table.column("event_type").to_pylist() == ["click", "buy"]
    assert table.column("value").to_pylist() == [2.0, 3.0]
    other = prepare(path, tmp_path / "b", user_col="behavior", item_col="visitor_id")
    assert list(other.user_ids) == ["buy", "click"]


def test_missing_column_names_available_columns_and_option(write, tmp_path: Path) -> None:
    path = write("e.csv", "who,what,when\n1,a,1\n")
    with pytest.raises(DataError, match=r"no user column found in .* \(columns: who, what, when\); .*--user-col"):
        prepare(path, tmp_path / "a")
    with pytest.raises(DataError, match=r"has no column 'nope' \(given by --item-col\)"):
        prepare(path, tmp_path / "b", user_col="who", item_col="nope")


def test_items_table_template_and_text_columns(write, tmp_path: Path) -> None:
    events = write("e.csv", "user_id,item_id,ts\n1,a,1\n1,b,2\n1,c,3\n")
    items = write("items.csv", "item_id,title,brand\na,Shoe,Acme\nb,Hat,\nb,Dup,X\nzz,Unused,Y\n")
    ds = prepare(events, tmp_path / "a", items=items, text_template="{title} by {brand}")
    assert ds.item_text[1:] == ["Shoe by Acme", "Hat by ", None]
    assert ds.manifest["text"]["missing"] == 1
    assert ds.manifest["dropped"]["items_table_duplicate_id"] == 1
    assert ds.manifest["dropped"]["items_table_without_events"] == 1
    joined = prepare(events, tmp_path / "b", items=items, text_columns="brand,title")
    assert joined.item_text[1] == "Acme | Shoe"
    assert joined.manifest["text"]["template"] == "{brand} | {title}"
    default = prepare(events, tmp_path / "c", items=items)
    assert default.item_text[1] == "Shoe | Acme"
    with pytest.raises(DataError, match=r"field 'price' is not a column .* available columns: title, brand"):
        prepare(events, tmp_path / "d", items=items, text_template="{title} {price}")


def test_items_table_rows_left_out_are_shown_with_their_file_and_line(write, tmp_path: Path) -> None:
    events = write("e.csv", "user_id,item_id,ts\nu,a,1\nu,b,2\n")
    items = write("items.csv", "item_id,title\na,Shoe\n\n,No id\nb,Hat\na,Again\nb,Hat,extra\n")
    ds = prepare(events, tmp_path / "out", items=items)
    m = ds.manifest
    assert {k: v for k, v in m["dropped"].items() if k.startswith("items_table_")} == {
        "items_table_blank_line": 1,
        "items_table_malformed_too_many_columns": 1,
        "items_table_missing_id": 1,
        "items_table_duplicate_id": 1,
    }
    shown = [(e["line"], e["reason"], e["file"]) for e in m["examples"]]
    assert shown == [
        (3, "items_table_blank_line", str(items)),
        (4, "items_table_missing_id", str(items)),
        (6, "items_table_duplicate_id", str(items)),
        (7, "items_table_malformed_too_many_columns", str(items)),
    ]
    assert m["examples"][2]["values"] == {"item_id": "a", "title": "Again"}


def test_parquet_items_table(write, tmp_path: Path) -> None:
    events = write("e.csv", "user_id,product_id,ts\n1,10,1\n1,11,2\n")
    pq.write_table(pa.table({"product_id": [10, 11], "name": ["Ten", "Eleven"]}), tmp_path / "items.parquet")
    ds = prepare(events, tmp_path / "out", items=tmp_path / "items.parquet", text_template="{name} #{item_id}")
    assert ds.item_text[1:] == ["Ten #10", "Eleven #11"]


def test_unknown_extension_asks_for_format(write, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pass --format"):
        prepare(write("events.log", "a,b\n"), tmp_path / "out")
