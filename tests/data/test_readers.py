"""Each reader on a tiny fixture: formats, layouts, encodings, column mapping and side tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.data.dataset import PreparedDataset
from lmrec.data.prepare import prepare
from lmrec.data.readers import guess_format
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
    assert ds.manifest["dropped"] == {"malformed_json": 2}
    assert [(e["line"], e["reason"]) for e in ds.manifest["examples"]] == [
        (3, "malformed_json"),
        (6, "malformed_json"),
    ]


def test_movielens_100k_layout(write, tmp_path: Path) -> None:
    write("ml/u.data", "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250949\n")
    flags = ["0"] * 19
    drama = flags.copy()
    drama[8] = "1"  # Drama
    write(
        "ml/u.item",
        f"10|Misérables, Les (1995)|01-Jan-1995||http://x|{'|'.join(drama)}\n"
        f"20|Toy Story (1995)|01-Jan-1995||http://y|{'|'.join(flags)}\n",
        encoding="latin-1",
    )
    ds = prepare(tmp_path / "ml", tmp_path / "out")
    assert ds.manifest["source"]["format"] == "movielens"
    assert ds.item_text[1:] == ["Misérables, Les (1995) | Drama", "Toy Story (1995) | "]
    assert "genres" in ds.item_table.column_names and "Drama" not in ds.item_table.column_names
    assert ds.manifest["text"] == {"template": "{title} | {genres}", "missing": 0, "columns": ["title", "genres"]}
    assert ds.manifest["columns"]["value"] == "rating"


def test_movielens_1m_dat_files_latin1(write, tmp_path: Path) -> None:
    write("ml1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        "ml1m/movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Misérables (1995)::Animation|Musical\n",
        encoding="latin-1",
    )
    ds = prepare(tmp_path / "ml1m" / "ratings.dat", tmp_path / "out")
    assert list(ds.item_ids[1:]) == ["661", "1193"]
    assert ds.item_text[1] == "Misérables (1995) | Animation|Musical"
    assert ds.manifest["name"] == "ml1m"


def test_movielens_csv_files(write, tmp_path: Path) -> None:
    write("ml25/ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n")
    write("ml25/movies.csv", 'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Children\n29,Heat (1995),Crime\n')
    assert guess_format(tmp_path / "ml25" / "ratings.csv") == "movielens"
    ds = prepare(tmp_path / "ml25", tmp_path / "out")
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["29", "2"]
    assert ds.item_text[1:] == ["Jumanji, The (1995) | Adventure|Children", "Heat (1995) | Crime"]


def test_recbole_folder_strips_types_and_joins_side_tables(write, tmp_path: Path) -> None:
    write("toy/toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t7\t4\t10\n1\t8\t2\t20\n")
    write(
        "toy/toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n7\tHeat\t1995\tCrime\n",
    )
    write("toy/toy.user", "user_id:token\tage:token\n1\t24\n")
    ds = prepare(tmp_path / "toy", tmp_path / "out")
    assert ds.manifest["source"]["format"] == "recbole"
    assert ds.item_text[1:] == ["Heat (1995) | Crime", None]
    assert ds.manifest["text"]["missing"] == 1
    users = pq.read_table(tmp_path / "out" / "users.parquet").to_pylist()
    assert users == [{"user_idx": 0, "user_id": "1", "age": "24"}]


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


def test_latin1_csv_with_encoding_option(write, tmp_path: Path) -> None:
    path = write("e.csv", "user,item,time\nJosé,a,1\nJosé,b,2\nJo,c,3\n", encoding="latin-1")
    broken = prepare(path, tmp_path / "a")
    assert broken.manifest["dropped"]["malformed_invalid_encoding"] == 2
    assert [e["line"] for e in broken.manifest["examples"]] == [2, 3]
    ds = prepare(path, tmp_path / "b", encoding="latin-1")
    assert list(ds.user_ids) == ["Jo", "José"]


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


def test_parquet_items_table(write, tmp_path: Path) -> None:
    events = write("e.csv", "user_id,product_id,ts\n1,10,1\n1,11,2\n")
    pq.write_table(pa.table({"product_id": [10, 11], "name": ["Ten", "Eleven"]}), tmp_path / "items.parquet")
    ds = prepare(events, tmp_path / "out", items=tmp_path / "items.parquet", text_template="{name} #{item_id}")
    assert ds.item_text[1:] == ["Ten #10", "Eleven #11"]


def test_unknown_extension_asks_for_format(write, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pass --format"):
        prepare(write("events.log", "a,b\n"), tmp_path / "out")
