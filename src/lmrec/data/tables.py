"""The shapes the readers share: how to read a table (`TableSpec`), a source's tables (`Layout`), a loaded
table (`Loaded`) with its unread lines (`Rejects`), and the names of (possibly compressed) source files.

Kept apart from `lmrec.data.readers` so that the layout modules (`movielens`, `recbole`, `amazon`) and the
stages after reading use them without importing the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from lmrec.data.lines import LineMap, skip_over
from lmrec.data.sqlutil import ident

MAX_EXAMPLES = 10
_COMPRESSION = (".gz", ".zst")


@dataclass(frozen=True)
class TableSpec:
    """How to read one table: its path, reader kind (csv, parquet, jsonl) and CSV dialect."""

    path: Path
    kind: str
    delimiter: str | None = None
    names: tuple[str, ...] | None = None
    header: bool = True
    encoding: str | None = None
    quote: str | None = None
    genre_flags: tuple[str, ...] = ()
    list_separator: str | None = None  # JSON arrays are read as their non-blank elements joined by this
    json_keys: tuple[str, ...] = ()  # JSON keys read even when no line has them (as nulls)
    list_strings: bool = False  # Python-list-looking strings are cleaned into plain text (`items.list_text`)

    @property
    def files(self) -> list[Path]:
        """The files this table reads (a Parquet folder reads each `*.parquet` in it)."""
        return sorted(self.path.glob("*.parquet")) if self.path.is_dir() else [self.path]


@dataclass(frozen=True)
class Layout:
    """A file source: its format, name, events table and optional items and users tables.

    For benchmark files `events` is the training examples file and `given` holds the valid and test ones.
    """

    format: str
    name: str
    events: TableSpec
    items: TableSpec | None = None
    users: TableSpec | None = None
    text_template: str | None = None
    given: dict[str, TableSpec] | None = None

    def tables(self) -> dict[str, TableSpec]:
        """The tables to read, by role (events, or train/valid/test for benchmark files; items, users)."""
        events = {"train": self.events, **self.given} if self.given else {"events": self.events}
        found = {**events, "items": self.items, "users": self.users}
        return {role: spec for role, spec in found.items() if spec is not None}


@dataclass
class Rejects:
    """Lines a reader did not turn into a row: counts by reason, their sorted positions, first examples.

    `lines` are the slots that hold no row: DuckDB record numbers for CSV files (see `lmrec.data.lines`),
    file lines for JSON Lines files; the examples always carry file lines.
    """

    counts: dict[str, int] = field(default_factory=dict)
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    examples: list[dict] = field(default_factory=list)


@dataclass
class Loaded:
    """A table loaded into DuckDB: rows in source order (`rowid`), its columns and its rejected lines.

    A row's file line is derived from its `rowid`, the header, the rejected and blank records and the
    multi-line records of `line_map`. For Parquet and SQL sources the "line" is the 1-based row number.
    `nested` maps each column holding lists, structs, maps or JSON to a description of its type.
    """

    table: str
    columns: list[str]
    where: str
    rejects: Rejects = field(default_factory=Rejects)
    header_lines: int = 0
    line_map: LineMap = field(default_factory=LineMap)
    nested: dict[str, str] = field(default_factory=dict)
    row_lines: np.ndarray | None = None  # the file line of every row, when the reader knows them directly
    list_strings: bool = False

    def lines_of(self, con: duckdb.DuckDBPyConnection, rows: list[int]) -> dict[int, int]:
        """Map row ids (`rowid`) to 1-based file line numbers, counting the header."""
        lines = self.line_numbers(np.asarray(rows, dtype=np.int64))
        return {int(r): int(line) for r, line in zip(rows, lines, strict=True)}

    def line_numbers(self, rows: np.ndarray) -> np.ndarray:
        """The 1-based file line of each row id (`rowid`), vectorised."""
        if self.row_lines is not None:
            return self.row_lines[rows]
        records = skip_over(rows, self.rejects.lines, first=self.header_lines + 1)
        return self.line_map.file_lines(records)

    def examples(self, con: duckdb.DuckDBPyConnection, rows: list[tuple[int, str]]) -> list[dict]:
        """The examples to show from dropped rows (row id, reason) and the rejected lines, in file order."""
        lines = self.lines_of(con, [row for row, _ in rows])
        found = [{"line": lines[row], "reason": reason, "row": row} for row, reason in rows]
        chosen = pick_examples(found + [dict(example) for example in self.rejects.examples])
        values = self._values_of(con, [e["row"] for e in chosen if "row" in e])
        for example in chosen:
            if "row" in example:
                example["values"] = values[example.pop("row")]
        return chosen

    def _values_of(self, con: duckdb.DuckDBPyConnection, rows: list[int]) -> dict[int, dict]:
        """The original values (as text) of a few rows, by row id."""
        if not rows:
            return {}
        columns = ", ".join(f"CAST({ident(c)} AS VARCHAR)" for c in self.columns)
        result = con.execute(
            f"SELECT rowid, {columns} FROM {ident(self.table)} WHERE rowid IN ({', '.join(str(int(r)) for r in rows)})"
        ).fetchall()
        return {int(row[0]): dict(zip(self.columns, row[1:], strict=True)) for row in result}


def pick_examples(candidates: list[dict], limit: int = MAX_EXAMPLES) -> list[dict]:
    """The examples to show, in line order: the first of every reason, then the earliest others up to `limit`."""
    ordered = sorted(candidates, key=lambda example: example["line"])
    firsts: dict[str, int] = {}
    for index, example in enumerate(ordered):
        firsts.setdefault(example["reason"], index)
    chosen = set(firsts.values())
    others = [i for i in range(len(ordered)) if i not in chosen][: max(limit - len(chosen), 0)]
    return [ordered[i] for i in sorted(chosen.union(others))]


def strip_compression(name: str) -> str:
    """A file name without its compression suffix (.gz, .zst), which hides the format's own."""
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def path_stem(path: Path) -> str:
    """A source's name: a file's stem past any compression suffix, or a folder's name."""
    return Path(strip_compression(path.name)).stem if path.is_file() else path.name
