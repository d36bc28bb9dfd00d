"""Readers: find a source's tables (by format or folder layout) and load them into DuckDB in file order.

Every table is loaded as it is (CSV, TSV, JSON Lines and MovieLens/RecBole text as strings; Parquet with
its own types), with `rowid` following the file's order. Lines that cannot be read are not lost: they are
counted by reason, with their file line numbers, in the table's `Rejects`: malformed lines (too few or too
many fields, longer than DuckDB's 2 MB line limit, invalid JSON) and blank lines (`blank_line`). A file that
is not valid UTF-8 is refused unless an encoding is given (`--encoding latin-1` for Latin-1, or
`--encoding utf-8` to count its undecodable lines as `malformed_invalid_encoding`). Columns holding lists,
structs, maps or JSON arrays/objects are recorded in `Loaded.nested`, so that an id, time, type or value
column of that kind is refused instead of being read as text such as "[0, 0]".

Supported layouts:

- `csv` / `tsv`: any delimiter (sniffed, or `delimiter`), one header line; a headerless file needs
  `names` naming every column in order.
- `parquet`: one file, or a folder of `*.parquet` files.
- `jsonl`: one JSON object per line; lines that are not valid JSON objects are counted as `malformed_json`.
- `movielens`: `u.data` + `u.item` (ML-100K), `ratings.dat` + `movies.dat` (ML-1M/10M), `ratings.csv` +
  `movies.csv` (ML-20M/25M/32M/latest); a folder holding them or the ratings file itself.
- `recbole`: atomic files `NAME.inter` with optional `NAME.item` / `NAME.user` (header `name:type`).
- `recbole-benchmark`: RecBole benchmark files `NAME.train.inter`, `NAME.valid.inter`, `NAME.test.inter`
  (examples of a history and a target, read by `lmrec.data.given`), a folder holding them or one of them,
  with optional item side information: `NAME.item.json` (a JSON object of objects keyed by item id),
  `NAME.item` (RecBole) or `NAME.text` (UniSRec: `item_id`, `text`), the first found in that order, and
  `NAME.user`. Python-list-looking strings of that side information ("['a', 'b']") are read as plain text.
  A folder with both an atomic `NAME.inter` and benchmark files is read as atomic unless `given` is asked.
- `amazon`: Amazon reviews as JSON lines, gzipped or not: 2018 (`CATEGORY_5.json.gz` or `CATEGORY.json.gz`
  + optional `meta_CATEGORY.json.gz`) or 2023 (`CATEGORY.jsonl.gz` + optional `meta_CATEGORY.jsonl.gz`);
  a folder holding them or the review file itself (a lone `*.jsonl` file is `jsonl` unless a `meta_*` file
  is beside it). The meta file is the items table, its list fields (category, description, features, ...)
  read as their non-blank elements joined with ", ".

The MovieLens, RecBole and Amazon layouts are told in `lmrec.data.movielens`, `lmrec.data.recbole` and
`lmrec.data.amazon`; the types the readers return (`TableSpec`, `Layout`, `Loaded`) are in `lmrec.data.tables`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from lmrec.data.amazon import (
    AMAZON_LIST_SEPARATOR,
    amazon_files,
    amazon_items,
    amazon_layout,
    amazon_meta,
    amazon_suffix,
    is_meta,
)
from lmrec.data.lines import LineMap, scan_lines, skip_over
from lmrec.data.movielens import fold_genres, movielens_items, movielens_layout
from lmrec.data.recbole import recbole_layout, recbole_spec, text_spec
from lmrec.data.sqlutil import ident, literal
from lmrec.data.tables import MAX_EXAMPLES, Layout, Loaded, Rejects, TableSpec, path_stem, strip_compression
from lmrec.errors import DataError

_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".inter": "recbole",
}
EXAMPLE_TEXT_CHARS = 200  # a rejected line is shown up to this many characters
SNIFF_MAX_LINE = 1 << 24  # the dialect is sniffed with lines up to 16 MB; rows over 2 MB are then rejected
_NESTED_TYPES = ("STRUCT", "MAP", "UNION", "JSON")


def detect(
    path: Path,
    fmt: str | None = None,
    *,
    columns: tuple[str, ...] | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    given: bool = False,
) -> Layout:
    """Tell a source's layout from `fmt`, else from its extension or the files in its folder.

    `given` (the split was asked to be `given`) prefers RecBole benchmark files to an atomic `NAME.inter`.
    """
    fmt = fmt or guess_format(path)
    if columns is not None and fmt not in ("csv", "tsv"):
        raise DataError(f"--columns names the columns of a headerless CSV/TSV file, not of a {fmt} source.")
    if fmt == "movielens":
        return movielens_layout(path, encoding)
    if fmt == "recbole":
        return recbole_layout(path, encoding, given)
    if fmt == "amazon":
        return amazon_layout(path, encoding)
    if fmt == "sql":
        raise DataError(f"--format sql reads a database URL such as sqlite:///{path}, not a file path.")
    if path.is_dir() and fmt != "parquet":
        raise DataError(f"{path} is a folder; give the {fmt} file itself.")
    spec = TableSpec(
        path,
        "csv" if fmt in ("csv", "tsv") else fmt,
        delimiter=delimiter or ("\t" if fmt == "tsv" else None),
        names=columns,
        header=columns is None,
        encoding=encoding,
    )
    return Layout(fmt, path_stem(path), spec)


def guess_format(path: Path) -> str:
    """The format of a path from its extension or folder contents; DataError when it cannot tell."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(n.endswith(".inter") for n in names):
            return "recbole"
        if names & {"u.data", "ratings.dat", "ratings.csv"}:
            return "movielens"
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
        if amazon_files(path):
            return "amazon"
        raise DataError(
            f"cannot tell the layout of folder {path}: expected NAME.inter (RecBole), u.data, ratings.dat "
            "or ratings.csv (MovieLens), *.parquet files or Amazon review JSON lines (*.json.gz, *.jsonl.gz); "
            "pass --format."
        )
    name = path.name.lower()
    if name in ("u.data", "ratings.dat") or (name == "ratings.csv" and (path.parent / "movies.csv").exists()):
        return "movielens"
    if amazon_suffix(path.name) == ".json" or (amazon_suffix(path.name) and amazon_meta(path) is not None):
        return "amazon"
    fmt = _EXTENSIONS.get(Path(strip_compression(name)).suffix)
    if fmt is None:
        raise DataError(f"cannot tell the format of {path} from its name; pass --format csv|tsv|parquet|jsonl.")
    return fmt


def table_spec(path: Path, encoding: str | None = None) -> TableSpec:
    """How to read a side table (items or users) from its name: MovieLens and RecBole files, else by extension."""
    name = path.name.lower()
    if name in ("u.item", "movies.dat", "movies.csv"):
        return movielens_items(path, encoding)
    if name.endswith((".item", ".user")):
        return recbole_spec(path, encoding)
    if name.endswith(".text"):
        return text_spec(path, encoding)
    if is_meta(name) and amazon_suffix(name):
        return amazon_items(path, encoding)
    if name.endswith(".json"):
        return TableSpec(path, "json-object", encoding=encoding, list_strings=True)
    fmt = _EXTENSIONS.get(Path(strip_compression(name)).suffix)
    if fmt not in ("csv", "tsv", "parquet", "jsonl"):
        raise DataError(f"cannot tell the format of {path} from its name; use a .csv, .tsv, .parquet or .jsonl file.")
    kind = "csv" if fmt in ("csv", "tsv") else fmt
    return TableSpec(path, kind, delimiter="\t" if fmt == "tsv" else None, encoding=encoding)


def load_table(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    """Load one table into DuckDB as `table`, counting the lines that could not be read."""
    if not spec.path.exists():
        raise DataError(f"{spec.path} does not exist.")
    if spec.path.is_file() and spec.path.stat().st_size == 0:
        raise DataError(f"{spec.path} is empty.")
    if spec.path.is_dir() and not spec.files:
        raise DataError(f"{spec.path} has no *.parquet files.")
    loader = {"csv": _load_csv, "parquet": _load_parquet, "jsonl": _load_jsonl, "json-object": _load_json_object}
    loaded = loader[spec.kind](con, spec, table)
    _check_encoding(spec, loaded.rejects)
    if spec.genre_flags:
        fold_genres(con, loaded, spec.genre_flags)
    loaded.list_strings = spec.list_strings
    return loaded


def sql_error(exc: duckdb.Error, where: str) -> DataError:
    """A DuckDB error while reading `where`, as one sentence."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, duckdb.OutOfMemoryException):
        return DataError(f"cannot read {where} within DuckDB's memory limit ({first}); raise --memory-limit.")
    return DataError(f"cannot read {where}: {first}")


def _run(con: duckdb.DuckDBPyConnection, sql: str, where: str) -> None:
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise sql_error(exc, where) from exc


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {ident(table)}").fetchall()]


def _load_csv(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    """Read a CSV with its sniffed dialect; count rejected and blank records, and map records to file lines."""
    dialect, columns = _sniff(con, spec)
    options = [
        "auto_detect=false",
        "all_varchar=true",
        "store_rejects=true",
        f"rejects_table={literal(table + '_rejects')}",
        f"rejects_scan={literal(table + '_scans')}",
        "columns={" + ", ".join(f"{literal(c)}: 'VARCHAR'" for c in columns) + "}",
        *(_option(key, value) for key, value in dialect.items()),
    ]
    if spec.encoding is not None:
        options.append(f"encoding={literal(spec.encoding)}")
    source = f"read_csv({literal(str(spec.path))}, {', '.join(options)})"
    _run(con, f"CREATE TABLE {ident(table)} AS SELECT * FROM {source}", str(spec.path))
    if spec.header and _looks_like_data(columns):
        raise DataError(
            f"the first line of {spec.path} looks like data ({', '.join(columns)}), not a header; name "
            "every column in order with --columns, e.g. --columns user_id,item_id,timestamp."
        )
    line_map = scan_lines(
        con,
        spec.path,
        new_line=dialect["new_line"],
        quote=dialect["quote"],
        escape=dialect["escape"],
        encoding=spec.encoding,
        table=table,
    )
    if len(columns) == 1:  # a blank line is a row (an empty value) when there is one column, not a skipped record
        line_map = LineMap(multi_records=line_map.multi_records, extra_through=line_map.extra_through)
    rejects = _rejects(con, _reject_reasons(table + "_rejects"))
    rejects = _with_blank_records(rejects, line_map)
    for example in rejects.examples:
        example["line"] = int(line_map.file_lines(np.asarray([example["line"]]))[0])
    return Loaded(table, columns, str(spec.path), rejects, header_lines=int(spec.header), line_map=line_map)


def _sniff(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> tuple[dict[str, str | bool], list[str]]:
    """The file's CSV dialect (read_csv options) and column names, sniffed with a generous line limit.

    Sniffing with DuckDB's own 2 MB limit fails on the first over-long line; reading with the sniffed
    dialect and that limit instead rejects such a line as one malformed row. Comment and skip-row
    detection are off, so no line is left out without being counted.
    """
    given = ["all_varchar=true", "ignore_errors=true", "comment=''", "skip=0", f"max_line_size={SNIFF_MAX_LINE}"]
    # DuckDB's default buffer is 16 lines of the longest: 256 MB here, or the whole file, which would not fit
    # a small --memory-limit; two lines' worth holds the sample as well.
    given.append(f"buffer_size={2 * SNIFF_MAX_LINE}")
    given.append(f"header={str(spec.header).lower()}")
    if spec.delimiter is not None:
        given.append(f"delim={literal(spec.delimiter)}")
    if spec.quote is not None:
        given += [f"quote={literal(spec.quote)}", f"escape={literal(spec.quote)}"]
    if spec.encoding is not None:
        given.append(f"encoding={literal(spec.encoding)}")
    query = (
        "SELECT Delimiter, Quote, Escape, NewLineDelimiter, Columns "
        f"FROM sniff_csv({literal(str(spec.path))}, {', '.join(given)})"
    )
    try:
        delimiter, quote, escape, new_line, found = con.execute(query).fetchone()
    except duckdb.Error as exc:
        if "Maximum line size" in str(exc):
            raise DataError(
                f"cannot tell the CSV dialect of {spec.path}: a line among its first 20,480 is longer than "
                f"{SNIFF_MAX_LINE >> 20} MB; remove or shorten it (lines over 2 MB are counted as malformed)."
            ) from exc
        raise sql_error(exc, str(spec.path)) from exc
    columns = [column["name"] for column in found]
    if spec.names is not None and len(columns) != len(spec.names):
        raise DataError(
            f"{spec.path} has {len(columns)} columns per line but {len(spec.names)} column names were "
            f"given ({', '.join(spec.names)}); name every column in order."
        )
    dialect: dict[str, str | bool] = {
        "delim": spec.delimiter if spec.delimiter is not None else delimiter,
        "quote": _sniffed(quote),
        "escape": _sniffed(escape),
        "new_line": new_line,
        "header": spec.header,
    }
    return dialect, list(spec.names) if spec.names is not None else columns


def _option(key: str, value: str | bool) -> str:
    """One read_csv option: strings quoted, booleans as true/false."""
    return f"{key}={literal(value) if isinstance(value, str) else str(value).lower()}"


def _sniffed(value: str) -> str:
    """A sniffed character option: DuckDB writes an empty one as '(empty)'."""
    return "" if value == "(empty)" else value


def _looks_like_data(columns: list[str]) -> bool:
    """True when most header names are numbers: the file has no header line."""
    numeric = sum(1 for c in columns if _is_number(c))
    return numeric * 2 > len(columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _reject_reasons(rejects_table: str) -> str:
    """SQL: one row per line of a DuckDB rejects table, with `line`, `reason` (`malformed_<error>`) and `text`."""
    return (
        "SELECT line, 'malformed_' || replace(lower(min(error_type::VARCHAR)), ' ', '_') AS reason, "
        f"any_value(csv_line) AS text FROM {ident(rejects_table)} GROUP BY line"
    )


def _rejects(con: duckdb.DuckDBPyConnection, per_line: str) -> Rejects:
    """Rejects from a query of (line, reason, text) rows: counts, sorted lines, the first examples per reason."""
    counts = dict(con.execute(f"SELECT reason, count(*) FROM ({per_line}) GROUP BY reason").fetchall())
    lines = con.execute(f"SELECT line FROM ({per_line}) ORDER BY line").fetchnumpy()["line"]
    examples = con.execute(
        f"SELECT line, reason, left(text, {EXAMPLE_TEXT_CHARS}) FROM ({per_line}) "
        f"QUALIFY row_number() OVER (PARTITION BY reason ORDER BY line) <= {MAX_EXAMPLES} ORDER BY line"
    ).fetchall()
    return Rejects(
        counts={k: int(v) for k, v in counts.items()},
        lines=np.asarray(lines, dtype=np.int64),
        examples=[{"line": int(line), "reason": r, "text": t} for line, r, t in examples],
    )


def _with_blank_records(rejects: Rejects, line_map: LineMap) -> Rejects:
    """Add a CSV file's blank records (skipped by DuckDB) to its rejects as `blank_line`."""
    blank = line_map.blank_records
    if not len(blank):
        return rejects
    examples = [{"line": int(record), "reason": "blank_line", "text": ""} for record in blank[:MAX_EXAMPLES]]
    return Rejects(
        counts={**rejects.counts, "blank_line": len(blank)},
        lines=np.union1d(rejects.lines, blank),
        examples=rejects.examples + examples,
    )


def _check_encoding(spec: TableSpec, rejects: Rejects) -> None:
    """Refuse a file that is not valid UTF-8 when no encoding was given, naming the options that read it."""
    bad = rejects.counts.get("malformed_invalid_encoding", 0)
    if spec.encoding is not None or not bad:
        return
    first = min(e["line"] for e in rejects.examples if e["reason"] == "malformed_invalid_encoding")
    raise DataError(
        f"{spec.path} is not valid UTF-8 ({bad:,} undecodable lines, the first at line {first}); if it is "
        "Latin-1 (ISO-8859-1) pass --encoding latin-1, or pass --encoding utf-8 to count those lines as "
        "malformed_invalid_encoding and prepare the rest."
    )


def nested_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """The columns of a DuckDB table holding lists, arrays, structs, maps, unions or JSON, with their types."""
    described = con.execute(f"DESCRIBE {ident(table)}").fetchall()
    return {name: kind for name, kind, *_ in described if kind.endswith("]") or kind.upper().startswith(_NESTED_TYPES)}


def _load_parquet(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    source = f"{spec.path}/*.parquet" if spec.path.is_dir() else str(spec.path)
    _run(con, f"CREATE TABLE {ident(table)} AS SELECT * FROM read_parquet({literal(source)})", str(spec.path))
    return Loaded(table, _columns(con, table), str(spec.path), nested=nested_columns(con, table))


def _load_jsonl(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    """Read lines as one text column, then keep the JSON objects; others are `malformed_json` or `blank_line`.

    Every line that holds no row (unreadable, blank, not a JSON object) is a rejected line, so that a row's
    file line is found as a CSV record's is (`Loaded.lines_of`, `lines.skip_over`).
    """
    lines, rejects = f"{table}_lines", f"{table}_rejects"
    encoding = f", encoding={literal(spec.encoding)}" if spec.encoding else ""
    _run(
        con,
        f"CREATE TABLE {ident(lines)} AS SELECT line, CASE WHEN json_valid(line) THEN line::JSON END "
        f"AS j FROM read_csv({literal(str(spec.path))}, columns={{'line': 'VARCHAR'}}, header=false, delim='\x01', "
        f"quote='', escape='', auto_detect=false, store_rejects=true, rejects_table={literal(rejects)}, "
        f"rejects_scan={literal(table + '_scans')}{encoding})",
        str(spec.path),
    )
    loaded_rejects = _jsonl_rejects(con, lines, rejects)
    found = con.execute(
        f"SELECT e.key, any_value(e.type) FILTER (WHERE e.type IN ('ARRAY', 'OBJECT')) "
        f"FROM {ident(lines)} p, json_each(p.j) e WHERE json_type(p.j) = 'OBJECT' "
        "GROUP BY e.key ORDER BY min(p.rowid), arg_min(e.id, p.rowid)"
    ).fetchall()
    keys = [key for key, _ in found] + [k for k in spec.json_keys if k not in {key for key, _ in found}]
    nested = {key: f"JSON {kind.lower()}" for key, kind in found if kind is not None}
    # A table needs a column: a file without keys gets a placeholder, which `keys` (the columns) leaves out.
    values = ", ".join(f"{_json_value(k, spec.list_separator)} AS {ident(k)}" for k in keys) or "NULL AS __none"
    objects = f"FROM {ident(lines)} WHERE json_type(j) = 'OBJECT' ORDER BY rowid"
    con.execute(f"CREATE TABLE {ident(table)} AS SELECT {values} {objects}")
    con.execute(f"DROP TABLE {ident(lines)}")
    return Loaded(table, keys, str(spec.path), loaded_rejects, nested=nested)


def _load_json_object(con: duckdb.DuckDBPyConnection, spec: TableSpec, table: str) -> Loaded:
    """Read a JSON object of objects (`{"<id>": {"title": ..., ...}, ...}`) in memory: a row per entry.

    The key becomes column `item_id` (an entry's own `item_id` field is kept as `item_id_field`); lists are
    read as their non-blank elements joined with ", ", other non-strings as JSON. An entry whose value is not
    an object is counted as `malformed_entry`; every row and reject keeps the line its key is on. Duplicate
    keys are all kept, so that the items table counts them.
    """
    text = _read_text(spec)
    rows: list[tuple[int, dict]] = []
    rejects: list[dict] = []
    for line, key, value in _object_entries(text, spec.path):
        if isinstance(value, dict):
            rows.append((line, {"item_id": key, **{_field_name(k): _json_text(v) for k, v in value.items()}}))
        else:
            rejects.append(
                {
                    "line": line,
                    "reason": "malformed_entry",
                    "text": f"{json.dumps(key)}: {json.dumps(value)}"[:EXAMPLE_TEXT_CHARS],
                }
            )
    columns = list(dict.fromkeys(name for _, row in rows for name in row)) or ["item_id"]
    arrow = pa.table({name: pa.array([row.get(name) for _, row in rows], pa.string()) for name in columns})
    con.register("_json_object", arrow)
    try:
        con.execute(f"CREATE TABLE {ident(table)} AS SELECT * FROM _json_object")
    finally:
        con.unregister("_json_object")
    counts = {"malformed_entry": len(rejects)} if rejects else {}
    reject_lines = np.asarray([r["line"] for r in rejects], dtype=np.int64)
    found = Rejects(counts, reject_lines, rejects[:MAX_EXAMPLES])
    row_lines = np.asarray([line for line, _ in rows], dtype=np.int64)
    return Loaded(table, columns, str(spec.path), found, row_lines=row_lines)


def _read_text(spec: TableSpec) -> str:
    """A whole file as text in its encoding (UTF-8 by default); DataError naming the first undecodable line."""
    data = spec.path.read_bytes()
    encoding = spec.encoding or "utf-8"
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{spec.path} is not valid {encoding} (the first undecodable byte is on line {line}); pass --encoding "
            "latin-1 if it is Latin-1 (ISO-8859-1)."
        ) from None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _object_entries(text: str, path: Path) -> Iterator[tuple[int, str, object]]:
    """(line of the key, key, value) of every entry of a JSON object, duplicate keys included, in file order."""
    decoder = json.JSONDecoder()
    lines, counted = 1, 0

    def skip(at: int) -> int:
        return _JSON_SPACE.match(text, at).end()  # type: ignore[union-attr]

    def fail(at: int, what: str) -> DataError:
        line = text.count("\n", 0, at) + 1
        return DataError(f"{path} is not a JSON object of items ({what} on line {line}); fix the file or give another.")

    def decode(at: int) -> tuple[object, int]:
        try:
            return decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, exc.msg.lower()) from None

    at = skip(0)
    if not text.startswith("{", at):
        raise fail(at, "it does not start with '{'")
    at = skip(at + 1)
    more = not text.startswith("}", at)
    while more:
        start = at
        key, at = decode(at)
        if not isinstance(key, str):
            raise fail(start, "a key that is not a string")
        at = skip(at)
        if not text.startswith(":", at):
            raise fail(at, "no ':' after a key")
        value, at = decode(skip(at + 1))
        lines, counted = lines + text.count("\n", counted, start), start
        yield lines, key, value
        at = skip(at)
        more = text.startswith(",", at)
        if more:
            at = skip(at + 1)
        elif not text.startswith("}", at):
            raise fail(at, "no ',' or '}' after an entry")
    if skip(at + 1) != len(text):
        raise fail(skip(at + 1), "text after the object")


def _field_name(name: str) -> str:
    """An entry's field name as a column: its own `item_id` field must not shadow the key column."""
    return "item_id_field" if name == "item_id" else name


def _json_text(value: object) -> str | None:
    """A JSON value as text: strings as they are, lists as their non-blank elements joined, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [text.strip() for text in map(_json_text, value) if text and text.strip()]
        return AMAZON_LIST_SEPARATOR.join(parts)
    return json.dumps(value, ensure_ascii=False)


def _jsonl_rejects(con: duckdb.DuckDBPyConnection, lines: str, rejects: str) -> Rejects:
    """The lines of a JSON Lines file that hold no object: unread by DuckDB, blank or not a JSON object.

    The rows of `lines` (`rowid`) skip the unread lines; `skip_over` gives them back their file lines.
    """
    not_object = (
        "SELECT rowid AS r, CASE WHEN coalesce(trim(line), '') = '' THEN 'blank_line' ELSE 'malformed_json' END "
        f"AS reason, line AS text FROM {ident(lines)} WHERE j IS NULL OR json_type(j) <> 'OBJECT'"
    )
    rows = con.execute(f"SELECT r FROM ({not_object}) ORDER BY r").fetchnumpy()["r"]
    unread = con.execute(f"SELECT DISTINCT line FROM {ident(rejects)} ORDER BY line").fetchnumpy()["line"]
    con.register("_jsonl_lines", pa.table({"r": rows, "line": skip_over(rows, unread, first=1)}))
    per_line = (
        f"SELECT line, CASE WHEN reason IN ('malformed_invalid_state', 'malformed_too_many_columns') "
        f"THEN 'malformed_json' ELSE reason END AS reason, text FROM ({_reject_reasons(rejects)}) "
        f"UNION ALL SELECT m.line, b.reason, b.text FROM ({not_object}) b JOIN _jsonl_lines m USING (r)"
    )
    try:
        return _rejects(con, per_line)
    finally:
        con.unregister("_jsonl_lines")


def _json_pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _json_value(key: str, list_separator: str | None) -> str:
    """SQL reading `key` of JSON `j` as text; with a separator, an array as its non-blank elements joined."""
    pointer = literal(_json_pointer(key))
    if list_separator is None:
        return f"j->>{pointer}"
    # Join on chr(31), collapse the runs of it that blank elements leave, then swap in the separator.
    unit = "chr(31)"
    joined = f"{unit} || array_to_string(from_json(j->{pointer}, '[\"VARCHAR\"]'), {unit}) || {unit}"
    collapsed = f"regexp_replace({joined}, {unit} || '(\\s*' || {unit} || ')+', {unit}, 'g')"
    return (
        f"CASE WHEN json_type(j, {pointer}) = 'ARRAY' "
        f"THEN replace(trim({collapsed}, {unit}), {unit}, {literal(list_separator)}) ELSE j->>{pointer} END"
    )
