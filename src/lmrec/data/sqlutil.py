"""Small helpers for writing DuckDB SQL safely: quoted identifiers and string literals."""

from __future__ import annotations


def ident(name: str) -> str:
    """A double-quoted SQL identifier, so any column name (spaces, quotes, keywords) is safe."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def as_text(column: str) -> str:
    """The column as trimmed text with empty strings as NULL: the common form of ids and raw values."""
    return f"NULLIF(trim(CAST({ident(column)} AS VARCHAR)), '')"
