"""Side information: join item (and user) tables by id, render item text, write items/users.parquet.

Item text comes from a template such as "{title} | {genres}" whose fields name item-table columns.
Defaults, when neither `text_template` nor `text_columns` is given:

- MovieLens layouts: "{title} | {genres}" (ML-100K's genre flags are folded into `genres`).
- Amazon layouts: "{title} | {brand} | {category}" (2018) and "{title} | {store} | {categories}" (2023),
  list fields read as their elements joined with ", "; a field absent from the meta file is empty.
- An items table with `movie_title`, `release_year` and `class` (RecBole ml-100k):
  "{movie_title} ({release_year}) | {class}".
- RecBole benchmark files: "{title} | {brand} | {description}" when their side file has those columns.
- Any other items table: all its columns except the id, joined with " | ".
- No items table: no text.

An item's text is null when every field of the template is empty for it (or it is not in the table);
those items are counted as `text.missing` in the manifest, beside the template and the rendered texts'
lengths in characters (`text.chars`; what a token budget cuts is the text encoder's to report).

Tables read with `list_strings` (the side files of benchmark folders, JSON objects of items, UniSRec text
files) have their Python-list-looking strings ("['Sturdy.', 'Fits TR100']") read as plain text
(`list_text`): parsed as a literal, never evaluated, and kept as they are when they do not parse.
"""

from __future__ import annotations

import ast
import itertools
import re
import string
from dataclasses import dataclass
from pathlib import Path

import duckdb
from duckdb import sqltypes

from lmrec.data.columns import GUESSES, check_scalar, guess_column
from lmrec.data.sqlutil import as_text, ident, literal
from lmrec.data.tables import MAX_EXAMPLES, Loaded
from lmrec.errors import DataError

RECBOLE_ML100K_TEMPLATE = "{movie_title} ({release_year}) | {class}"
TEXT_SEPARATOR = " | "
LENGTH_QUANTILES = {"min": 0.0, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}
_SENTENCE_ENDS = (".", "!", "?", ";", ":")
_SEPARATOR = re.compile(r"""['"]\s*,\s*['"]""")
_ESCAPES = re.compile(r"\\[ntr]")
_RESERVED = {"item": ("item_idx", "item_id", "text", "cold"), "user": ("user_idx", "user_id")}


@dataclass
class Side:
    """A side table reduced to one row per id (`__id`): its output columns (name -> source), drops and examples.

    The examples are the first rows left out (rejected lines, missing and repeated ids), each with its line,
    reason (`<role>s_table_<reason>`), the table's file and its values or text.
    """

    role: str
    table: str
    columns: dict[str, str]
    where: str
    dropped: dict[str, int]
    examples: list[dict]


def prepare_side(
    con: duckdb.DuckDBPyConnection,
    loaded: Loaded,
    role: str,
    explicit_id: str | None,
    event_column: str | None,
) -> Side:
    """Reduce a loaded items/users table to one row per id, counting malformed, id-less and repeated rows."""
    id_column = _id_column(loaded, role, explicit_id, event_column)
    option = {"id": "--items-id-col"} if role == "item" else {}
    check_scalar({"id": id_column}, loaded.nested, f"the {role}s table {loaded.where}", option)
    table = f"{role}_side"
    columns = [c for c in loaded.columns if c != id_column]
    select = "".join(f", {_value_sql(c, loaded.list_strings)} AS {ident(c)}" for c in columns)
    source, key = ident(loaded.table), as_text(id_column)
    if loaded.list_strings:
        _register_list_text(con)
    con.execute(
        f"CREATE TABLE {table} AS SELECT {key} AS __id{select} FROM {source} WHERE {key} IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY __id ORDER BY rowid) = 1"
    )
    total, missing = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {key} IS NULL) FROM {source}").fetchone()
    kept = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    counts = {**loaded.rejects.counts, "missing_id": missing, "duplicate_id": total - missing - kept}
    dropped = {f"{role}s_table_{reason}": int(n) for reason, n in counts.items() if n}
    examples = [
        {**example, "reason": f"{role}s_table_{example['reason']}", "file": loaded.where}
        for example in loaded.examples(con, _left_out_rows(con, source, key) if total > kept else [])
    ]
    reserved = _RESERVED[role]
    outputs = {(f"{c}_side" if c in reserved else c): c for c in columns}
    return Side(role, table, outputs, loaded.where, dropped, examples)


def list_text(value: str) -> str:
    """A Python-list-looking string ("['a', 'b']") as its non-blank elements joined, else `value` unchanged.

    Parsed with `ast.literal_eval` (literals only, nothing is evaluated); nested lists are flattened. A
    string of quoted elements that is not a valid literal (an unescaped quote inside an element, as in
    "['it's sturdy', 'fits']") is split at its quote-comma-quote separators instead. Elements ending a
    sentence are followed by a space, others by ", ".
    """
    stripped = value.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return value
    try:
        parsed = ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        parsed = _quoted_elements(stripped)
    if not isinstance(parsed, list):
        return value
    parts = [part for part in _flatten(parsed) if part]
    joined = parts[0] if parts else ""
    for before, part in itertools.pairwise(parts):
        joined += (" " if before.endswith(_SENTENCE_ENDS) else ", ") + part
    return joined


def _quoted_elements(text: str) -> list[str] | None:
    """The elements of "['a', "b"]" cut at its separators, escapes such as \\n read as spaces; None when
    `text` is not quoted elements in brackets."""
    if len(text) < 4 or text[1] not in "'\"" or text[-2] not in "'\"":
        return None
    return [_ESCAPES.sub(" ", part) for part in _SEPARATOR.split(text[2:-2])]


def _flatten(values: list) -> list[str]:
    """The text of every element of a (nested) list, in order, its runs of white space (line breaks
    included) made one space; None elements left out."""
    found = []
    for value in values:
        if isinstance(value, list | tuple):
            found += _flatten(value)
        elif value is not None:
            found.append(" ".join(str(value).split()))
    return found


def _register_list_text(con: duckdb.DuckDBPyConnection) -> None:
    """Make `list_text` callable from SQL as `lmrec_list_text` (once per connection)."""
    known = con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'lmrec_list_text'").fetchall()
    if not known[0][0]:
        con.create_function("lmrec_list_text", list_text, [sqltypes.VARCHAR], sqltypes.VARCHAR)


def _value_sql(column: str, list_strings: bool) -> str:
    """SQL of a side column as text; with `list_strings`, list-looking values through `list_text`."""
    text = f"CAST({ident(column)} AS VARCHAR)"
    if not list_strings:
        return text
    return f"CASE WHEN starts_with(ltrim({text}), '[') THEN lmrec_list_text({text}) ELSE {text} END"


def _left_out_rows(con: duckdb.DuckDBPyConnection, source: str, key: str) -> list[tuple[int, str]]:
    """The first rows (row id, reason) without an id and with an id seen on an earlier row."""
    rows = con.execute(
        f"SELECT rowid, reason FROM (SELECT rowid, CASE WHEN {key} IS NULL THEN 'missing_id' WHEN "
        f"row_number() OVER (PARTITION BY {key} ORDER BY rowid) > 1 THEN 'duplicate_id' END AS reason "
        f"FROM {source}) WHERE reason IS NOT NULL "
        f"QUALIFY row_number() OVER (PARTITION BY reason ORDER BY rowid) <= {MAX_EXAMPLES} ORDER BY rowid"
    ).fetchall()
    return [(int(row), reason) for row, reason in rows]


def unused_rows(con: duckdb.DuckDBPyConnection, side: Side) -> dict[str, int]:
    """Count side-table ids that have no events left (call after the index is built)."""
    n = con.execute(
        f"SELECT count(*) FROM {side.table} WHERE __id NOT IN (SELECT {side.role}_id FROM {side.role}_index)"
    ).fetchone()[0]
    return {f"{side.role}s_table_without_events": int(n)} if n else {}


def choose_template(
    side: Side | None,
    text_template: str | None,
    text_columns: tuple[str, ...] | None,
    layout_template: str | None,
) -> str | None:
    """The item text template: explicit, else `text_columns` joined, else the layout's default."""
    if text_columns:
        return TEXT_SEPARATOR.join("{" + c + "}" for c in text_columns)
    if text_template is not None:
        return text_template
    if side is None:
        return None
    available = set(side.columns.values())
    if layout_template and set(template_fields(layout_template)) <= available:
        return layout_template
    if {"movie_title", "release_year", "class"} <= available:
        return RECBOLE_ML100K_TEMPLATE
    return TEXT_SEPARATOR.join("{" + c + "}" for c in side.columns.values()) or None


def template_fields(template: str) -> list[str]:
    """The column names a template refers to, in order; DataError on positional fields or format specs."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataError(f"text template {template!r} is not valid: {exc}.") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field or spec or conversion:
            raise DataError(
                f"text template {template!r} must name item columns in braces, e.g. '{{title}} | {{genres}}'."
            )
        fields.append(field)
    return fields


def check_template(template: str | None, side: Side | None) -> list[str]:
    """The template's fields, after checking each names an items-table column (or `item_id`)."""
    fields = template_fields(template) if template else []
    available = list(_sources(side))
    unknown = [f for f in fields if f not in available]
    if unknown:
        listed = ", ".join(available)
        where = f"the items table {side.where}" if side else "the data (there is no items table; use --items)"
        raise DataError(f"text template field {unknown[0]!r} is not a column of {where}; available columns: {listed}.")
    return fields


def write_items(con: duckdb.DuckDBPyConnection, side: Side | None, template: str | None, path: Path) -> dict:
    """Write items.parquet (index, original id, text, cold flag, side columns); return the text summary."""
    fields = check_template(template, side)
    sources = _sources(side)
    text = _render_sql(template, {f: sources[f] for f in fields}) if template else "NULL::VARCHAR"
    select, join = _side_sql(side, "i.item_id")
    con.execute(
        f"CREATE TABLE item_out AS SELECT i.item_idx, i.item_id, {text} AS text, i.cold{select} "
        f"FROM item_index i {join} ORDER BY i.item_idx"
    )
    con.execute(f"COPY item_out TO {literal(str(path))} (FORMAT parquet)")
    missing = con.execute("SELECT count(*) FROM item_out WHERE text IS NULL").fetchone()[0]
    return {"template": template, "missing": int(missing), "columns": fields, "chars": _text_lengths(con)}


def _text_lengths(con: duckdb.DuckDBPyConnection) -> dict[str, float] | None:
    """Quantiles and mean of the rendered texts' lengths in characters (None when no item has text)."""
    cuts = ", ".join(f"quantile_disc(length(text), {q})" for q in LENGTH_QUANTILES.values())
    row = con.execute(f"SELECT {cuts}, avg(length(text)) FROM item_out WHERE text IS NOT NULL").fetchone()
    if row[0] is None:
        return None
    return {**{k: int(v) for k, v in zip(LENGTH_QUANTILES, row[:-1], strict=True)}, "mean": round(float(row[-1]), 1)}


def write_users(con: duckdb.DuckDBPyConnection, side: Side | None, path: Path) -> None:
    """Write users.parquet: index, original id and the users table's columns when there is one."""
    select, join = _side_sql(side, "u.user_id")
    con.execute(
        f"COPY (SELECT u.user_idx, u.user_id{select} FROM user_index u {join} ORDER BY u.user_idx) "
        f"TO {literal(str(path))} (FORMAT parquet)"
    )


def _sources(side: Side | None) -> dict[str, str]:
    """Template field -> side-table column: the items table's own column names, and `item_id`."""
    sources = {src: src for src in (side.columns.values() if side else ())}
    sources.setdefault("item_id", "__id")
    return sources


def _side_sql(side: Side | None, key: str) -> tuple[str, str]:
    """The select list and LEFT JOIN that add a side table's columns to the index rows."""
    if side is None:
        return "", ""
    select = "".join(f", s.{ident(src)} AS {ident(out)}" for out, src in side.columns.items())
    return select, f"LEFT JOIN {side.table} s ON {key} = s.__id"


def _id_column(loaded: Loaded, role: str, explicit: str | None, event_column: str | None) -> str:
    listed = ", ".join(loaded.columns)
    if explicit is not None:
        if explicit not in loaded.columns:
            raise DataError(
                f"the {role}s table {loaded.where} has no column {explicit!r}; available columns: {listed}."
            )
        return explicit
    if event_column in loaded.columns:
        return event_column
    found = guess_column(loaded.columns, GUESSES[role])
    if found is None:
        hint = "name it with --items-id-col" if role == "item" else f"name it {event_column or 'user_id'}"
        raise DataError(f"no {role} id column found in the {role}s table {loaded.where} (columns: {listed}); {hint}.")
    return found


def _render_sql(template: str, fields: dict[str, str]) -> str:
    """SQL rendering `template` from side columns; NULL when every field is empty."""
    parts = []
    for text, field, _, _ in string.Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field is not None:
            parts.append(f"coalesce({_field_sql(fields[field])}, '')")
    empty = " AND ".join(f"{_field_sql(src)} IS NULL" for src in fields.values())
    return f"CASE WHEN {empty} THEN NULL ELSE {' || '.join(parts)} END" if fields else " || ".join(parts)


def _field_sql(source: str) -> str:
    column = "i.item_id" if source == "__id" else f"s.{ident(source)}"
    return f"NULLIF(trim({column}), '')"
