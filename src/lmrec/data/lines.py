"""File line numbers for CSV and JSON Lines rows: DuckDB's row ids and reject numbers are not file lines.

DuckDB's CSV reader skips blank lines without a trace and numbers a record (in its rejects) by counting
records, blank lines included, so a quoted field spanning several lines shifts every later number. A raw
pass over the file's physical lines (one text column, no quoting) finds the blank lines and the quote
characters that open or close a multi-line field; `LineMap` then maps DuckDB's record numbers to the file
line where each record starts, and lists the blank records so that they can be counted.

The raw pass materialises one small integer per line in DuckDB (not in Python) and brings back only the
lines that are blank or have an odd number of quote characters. A line it cannot read (over DuckDB's 2 MB
line limit, or not in the file's encoding) still counts as a line, assumed to open or close no quoted
field: the CSV reader rejects such a line too.

`skip_over` is the one row-to-line mapping of the readers: CSV rows past their rejected and blank records,
JSON Lines rows past the lines that hold no object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from lmrec.data.sqlutil import ident, literal

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class LineMap:
    """Where a CSV file's records start: its blank records and the extra lines of its multi-line records.

    Record numbers are DuckDB's (1-based, a blank line is a record); `multi_records` are the records that
    span several lines, sorted, and `extra_through[k]` the extra lines of `multi_records[: k + 1]`.
    """

    blank_records: np.ndarray = field(default_factory=lambda: _EMPTY)
    multi_records: np.ndarray = field(default_factory=lambda: _EMPTY)
    extra_through: np.ndarray = field(default_factory=lambda: _EMPTY)

    def file_lines(self, records: np.ndarray) -> np.ndarray:
        """The file line on which each record starts (records after multi-line ones move down)."""
        records = np.asarray(records, dtype=np.int64)
        before = np.searchsorted(self.multi_records, records, side="left")
        extra = np.concatenate([[0], self.extra_through])[before]
        return records + extra


def skip_over(rows: np.ndarray, skipped: np.ndarray, first: int) -> np.ndarray:
    """Positions of rows among numbered slots from `first` on, where the sorted `skipped` slots hold no row.

    Row r fills the r-th free slot: it moves past every skipped slot whose free slots before it are <= r.
    """
    rows = np.asarray(rows, dtype=np.int64)
    free_before = np.asarray(skipped, dtype=np.int64) - first - np.arange(len(skipped))
    return first + rows + np.searchsorted(free_before, rows, side="right")


def scan_lines(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    new_line: str,
    quote: str,
    escape: str,
    encoding: str | None,
    table: str,
) -> LineMap:
    """One raw pass over `path`: its blank lines and multi-line quoted records, as a `LineMap`."""
    lines, rejects = f"{table}_physical", f"{table}_physical_rejects"
    kind = f"CASE WHEN line IS NULL THEN 1 WHEN {_odd_quotes('line', quote, escape)} THEN 2 ELSE 0 END"
    decode = f", encoding={literal(encoding)}" if encoding is not None else ""
    con.execute(
        f"CREATE TEMP TABLE {ident(lines)} AS SELECT {kind}::UTINYINT AS kind FROM read_csv("
        f"{literal(str(path))}, columns={{'line': 'VARCHAR'}}, header=false, delim='\x01\x02\x03\x04', quote='', "
        f"escape='', auto_detect=false, new_line={literal(new_line)}, store_rejects=true, "
        f"rejects_table={literal(rejects)}, rejects_scan={literal(rejects + '_scan')}{decode})"
    )
    found = con.execute(f"SELECT rowid, kind FROM {ident(lines)} WHERE kind > 0 ORDER BY rowid").fetchnumpy()
    unread = con.execute(f"SELECT DISTINCT line FROM {ident(rejects)} ORDER BY line").fetchnumpy()["line"]
    con.execute(f"DROP TABLE {ident(lines)}; DROP TABLE {ident(rejects)}; DROP TABLE {ident(rejects + '_scan')}")
    physical = skip_over(found["rowid"], unread, first=1)
    return _line_map(physical, np.asarray(found["kind"]) == 1)


def _odd_quotes(column: str, quote: str, escape: str) -> str:
    """SQL: true when the line has an odd number of (unescaped) quote characters."""
    if not quote:
        return "false"
    text = column
    if escape and escape != quote:
        text = f"regexp_replace({column}, {literal(_regex_escape(escape) + '.')}, '', 'g')"
    odd = f"(length({text}) - length(replace({text}, {literal(quote)}, ''))) % 2 = 1"
    # Most lines hold no quote at all: testing for one first spares them the counting (half this pass's time).
    return f"(contains({column}, {literal(quote)}) AND {odd})"


def _regex_escape(char: str) -> str:
    return "".join(f"\\{c}" if not c.isalnum() else c for c in char)


def _line_map(physical: np.ndarray, blank: np.ndarray) -> LineMap:
    """From the blank lines and odd-quote lines (file order) to blank records and multi-line records."""
    toggles = (~blank).astype(np.int64)
    inside = (np.cumsum(toggles) - toggles) % 2 == 1  # within an open quoted field before this line
    openers = physical[~blank & ~inside]
    closers = physical[~blank & inside]
    openers = openers[: len(closers)]  # a quote left open at the end of the file closes nothing
    extra = closers - openers
    extra_through = np.cumsum(extra)
    # A line's record number is its line minus the extra lines of the multi-line records closed before it.
    closed_before = np.concatenate([[0], extra_through])
    blank_lines = physical[blank & ~inside]
    blank_records = blank_lines - closed_before[np.searchsorted(closers, blank_lines, side="left")]
    multi_records = openers - closed_before[np.searchsorted(closers, openers, side="left")]
    return LineMap(blank_records, multi_records, extra_through)
