"""Cleaning: parse ids, times and values, drop what cannot be used, and count every dropped row by reason.

All work is SQL over the loaded DuckDB table. The result is table `events` (`row` = original row order,
`uc`/`ic` = dense user/item codes, `ts` = epoch seconds, `typ`, `v`) with `user_codes` and `item_codes`
mapping codes to original ids. Every row is counted under one reason, in the order they are tested:

- `malformed_*`, `blank_line`: lines the reader could not turn into a row (from `Loaded.rejects`)
- `missing_user`, `missing_item`, `missing_timestamp`: empty id or time
- `unparsable_timestamp`: neither a number (epoch seconds; values >= 1e11 are milliseconds) nor an
  ISO-8601 date/time (taken as UTC when it has no offset)
- `unparsable_value`: a non-empty value that is not a finite number (an empty value stays null)
- `event_type_filtered`, `below_min_value`: the event-type filter and the value threshold
- `duplicate`: exact repeats of (user, item, timestamp, type, value); the first in row order is kept
- `min_user_interactions`, `min_item_interactions`: iterated k-core until stable
- `users_without_events`, `items_without_events`: ids seen in the input (on any row) that are left with
  no event (counts of ids, not rows; their rows are counted under the reasons above)

The examples (`Cleaned.examples`) hold the first row of every row reason, then the earliest other bad
rows up to ten, in file order, each with its file line.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from lmrec.data.sqlutil import as_text, ident, literal
from lmrec.data.tables import MAX_EXAMPLES, Loaded
from lmrec.errors import DataError

BAD_ROW_REASONS = (
    "missing_user",
    "missing_item",
    "missing_timestamp",
    "unparsable_timestamp",
    "unparsable_value",
)
MILLISECONDS_FROM = 1e11


@dataclass(frozen=True)
class Filters:
    """Which events to keep beyond validity: event types, value threshold, repeats and k-core."""

    event_types: tuple[str, ...] | None = None
    min_value: float | None = None
    keep_repeats: bool = False
    min_user_interactions: int = 0
    min_item_interactions: int = 0


@dataclass
class Cleaned:
    """What cleaning read, dropped (by reason) and kept, with the first bad rows as examples."""

    rows_read: int
    dropped: dict[str, int]
    examples: list[dict]
    users: int
    items: int
    interactions: int


def clean(
    con: duckdb.DuckDBPyConnection,
    loaded: Loaded,
    mapping: dict[str, str | None],
    filters: Filters,
    strict: bool = False,
) -> Cleaned:
    """Turn the loaded table into clean `events` (dropping the loaded table); count every row not kept."""
    _parse(con, loaded, mapping, filters)
    dropped = dict(loaded.rejects.counts)
    dropped.update(_reason_counts(con))
    rows_read = _count(con, "parsed") + sum(loaded.rejects.counts.values())
    if rows_read == 0:
        raise DataError(f"{loaded.where} has no data rows.")
    if strict:
        _stop_at_first_bad_row(con, loaded)
    _encode(con, filters.keep_repeats)
    valid = rows_read - sum(dropped.values())
    dropped["duplicate"] = valid - _count(con, "events")
    dropped_rows = _dropped_rows(con)
    kcore, kcore_rows = _k_core(con, filters.min_user_interactions, filters.min_item_interactions)
    dropped.update(kcore)
    examples = loaded.examples(con, dropped_rows + kcore_rows)
    con.execute(f"DROP TABLE {ident(loaded.table)}")
    users, items, interactions = con.execute(
        "SELECT count(DISTINCT uc), count(DISTINCT ic), count(*) FROM events"
    ).fetchone()
    dropped["users_without_events"] = _count(con, "user_codes") - users
    dropped["items_without_events"] = _count(con, "item_codes") - items
    dropped = {reason: int(n) for reason, n in dropped.items() if n}
    if interactions == 0:
        summary = ", ".join(f"{reason} {n}" for reason, n in dropped.items())
        raise DataError(
            f"no events left in {loaded.where} after cleaning and filtering (dropped: {summary}); "
            "check the column mapping and relax the filters."
        )
    con.execute("DROP TABLE parsed")
    return Cleaned(rows_read, dropped, examples, int(users), int(items), int(interactions))


def timestamp_sql(text: str) -> str:
    """SQL turning a text expression into epoch seconds (numbers, milliseconds or ISO-8601), else NULL."""
    number = f"TRY_CAST({text} AS DOUBLE)"
    return (
        f"CASE WHEN isfinite({number}) THEN CASE WHEN abs({number}) >= {MILLISECONDS_FROM} "
        f"THEN {number} / 1000 ELSE {number} END "
        f"WHEN {number} IS NULL THEN epoch(TRY_CAST({text} AS TIMESTAMPTZ)) END"
    )


def _parse(con: duckdb.DuckDBPyConnection, loaded: Loaded, mapping: dict[str, str | None], filters: Filters) -> None:
    """Create `parsed`: one row per loaded row with typed fields and the first reason it is dropped."""

    def text(role: str) -> str:
        """The role's column as trimmed text, or NULL when the role has no column."""
        column = mapping.get(role)
        return as_text(column) if column else "NULL::VARCHAR"

    reasons = [
        "WHEN u IS NULL THEN 'missing_user'",
        "WHEN i IS NULL THEN 'missing_item'",
        "WHEN t_raw IS NULL THEN 'missing_timestamp'",
        "WHEN ts IS NULL THEN 'unparsable_timestamp'",
        "WHEN v_raw IS NOT NULL AND v IS NULL THEN 'unparsable_value'",
    ]
    if filters.event_types is not None:
        kept = ", ".join(literal(t) for t in filters.event_types)
        reasons.append(f"WHEN typ IS NULL OR typ NOT IN ({kept}) THEN 'event_type_filtered'")
    if filters.min_value is not None:
        reasons.append(f"WHEN v IS NULL OR v < {float(filters.min_value)!r} THEN 'below_min_value'")
    con.execute(
        f"""
        CREATE TABLE parsed AS
        SELECT row, u, i, ts, typ, v, CASE {" ".join(reasons)} END AS reason
        FROM (
            SELECT row, u, i, t_raw, typ, v_raw, {timestamp_sql("t_raw")} AS ts,
                   CASE WHEN isfinite(TRY_CAST(v_raw AS DOUBLE)) THEN TRY_CAST(v_raw AS DOUBLE) END AS v
            FROM (
                SELECT rowid AS row, {text("user")} AS u, {text("item")} AS i, {text("time")} AS t_raw,
                       {text("type")} AS typ, {text("value")} AS v_raw
                FROM {ident(loaded.table)}
            )
        )
        """
    )


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()[0])


def _reason_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute(
        "SELECT reason, count(*) FROM parsed WHERE reason IS NOT NULL GROUP BY reason ORDER BY min(row)"
    ).fetchall()
    return {reason: int(n) for reason, n in rows}


def _stop_at_first_bad_row(con: duckdb.DuckDBPyConnection, loaded: Loaded) -> None:
    """For --strict: DataError naming the first malformed line or bad row (blank lines are not rows)."""
    bad = ", ".join(literal(r) for r in BAD_ROW_REASONS)
    first = con.execute(f"SELECT row, reason FROM parsed WHERE reason IN ({bad}) ORDER BY row LIMIT 1").fetchall()
    raise_first_bad_row(con, loaded, first)


def raise_first_bad_row(con: duckdb.DuckDBPyConnection, loaded: Loaded, rows: list[tuple[int, str]]) -> None:
    """DataError naming the earliest of the file's first bad `rows` (row id, reason) and of the lines its reader
    rejected (blank lines are not rows); nothing when there is neither."""
    found = [{"line": loaded.lines_of(con, [row])[row], "reason": reason} for row, reason in rows]
    found += [e for e in loaded.rejects.examples if e["reason"] != "blank_line"]
    if found:
        example = min(found, key=lambda e: e["line"])
        raise DataError(
            f"line {example['line']} of {loaded.where}: {example['reason'].replace('_', ' ')} "
            "(--strict stops at the first bad row)."
        )


def _dropped_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str]]:
    """The first rows (row id, reason) of every reason so far, in one query.

    A row of `parsed` that `events` does not hold was dropped: for its reason, or as an exact repeat.
    """
    rows = con.execute(
        "SELECT row, reason FROM (SELECT row, coalesce(reason, 'duplicate') AS reason FROM parsed p "
        "WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.row = p.row)) "
        f"QUALIFY row_number() OVER (PARTITION BY reason ORDER BY row) <= {MAX_EXAMPLES} ORDER BY row"
    ).fetchall()
    return [(int(row), reason) for row, reason in rows]


def _encode(con: duckdb.DuckDBPyConnection, keep_repeats: bool) -> None:
    """Create `events` from the valid rows, on dense integer user/item codes, without exact repeats.

    Every user and item seen gets a code, also those only on dropped rows (`*_without_events` counts
    them); a repeat of (user, item, timestamp, type, value) keeps its first row unless `keep_repeats`.
    """
    for side, column in (("user", "u"), ("item", "i")):
        con.execute(
            f"CREATE TABLE {side}_codes AS SELECT {column} AS id, "
            f"(row_number() OVER () - 1)::INTEGER AS code "
            f"FROM (SELECT DISTINCT {column} FROM parsed WHERE {column} IS NOT NULL)"
        )
    row, group = ("p.row", "") if keep_repeats else ("min(p.row)", "GROUP BY uc.code, ic.code, p.ts, p.typ, p.v")
    con.execute(
        f"""
        CREATE TABLE events AS
        SELECT {row} AS row, uc.code AS uc, ic.code AS ic, p.ts, p.typ, p.v
        FROM parsed p JOIN user_codes uc ON p.u = uc.id JOIN item_codes ic ON p.i = ic.id
        WHERE p.reason IS NULL {group}
        """
    )


def _k_core(
    con: duckdb.DuckDBPyConnection, min_user: int, min_item: int
) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Iteratively drop users with fewer than `min_user` and items with fewer than `min_item` events.

    Returns the rows dropped per reason and the first dropped rows of each round (row id, reason).
    """
    dropped = {"min_user_interactions": 0, "min_item_interactions": 0}
    first_rows: list[tuple[int, str]] = []
    sides = [(side, column, k) for side, column, k in (("user", "uc", min_user), ("item", "ic", min_item)) if k > 1]
    changed = bool(sides)
    while changed:
        changed = False
        for side, column, k in sides:
            reason = f"min_{side}_interactions"
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE kcore_ids AS "
                f"SELECT {column} FROM events GROUP BY {column} HAVING count(*) < {int(k)}"
            )
            gone = f"{column} IN (SELECT {column} FROM kcore_ids)"
            rows = con.execute(f"SELECT row FROM events WHERE {gone} ORDER BY row LIMIT {MAX_EXAMPLES}").fetchall()
            first_rows += [(int(row), reason) for (row,) in rows]
            removed = con.execute(f"DELETE FROM events WHERE {gone}").fetchone()[0]
            dropped[reason] += int(removed)
            changed = changed or removed > 0
    con.execute("DROP TABLE IF EXISTS kcore_ids")
    return dropped, first_rows
