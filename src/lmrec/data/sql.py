"""SQL sources: run a query against a database URL and stream the result into DuckDB through Arrow.

`duckdb:///path.db` is read by DuckDB itself (read-only); `sqlite:///path.db`, `postgresql://...` and
any other SQLAlchemy URL are fetched in chunks, as text, through SQLAlchemy. The rows are hashed as they
stream (with the query), so a preparation's fingerprint follows the data it actually read. Columns of
lists, structs or JSON (DuckDB types; Python lists, tuples and dicts from a driver, e.g. PostgreSQL arrays
and jsonb) are recorded in `Loaded.nested`, so that they are refused as ids instead of read as "[0, 0]".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import duckdb
import pyarrow as pa

from lmrec.data.readers import nested_columns, sql_error
from lmrec.data.sqlutil import ident
from lmrec.data.tables import Loaded
from lmrec.errors import DataError

CHUNK_ROWS = 100_000


def is_url(source: str) -> bool:
    """True when `source` is a database URL rather than a path."""
    return "://" in source


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages and the manifest."""
    if url.startswith("duckdb://"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # an unparsable URL is reported by load_sql; show only its scheme here
        return url.split("://", 1)[0] + "://..."


def load_sql(con: duckdb.DuckDBPyConnection, url: str, query: str | None, table: str) -> tuple[Loaded, str]:
    """Run `query` on the database at `url` into DuckDB table `table`; returns it and the data's sha256."""
    if not query:
        raise DataError(f'reading {display_url(url)} needs a query: pass --query "SELECT ...".')
    digest = hashlib.sha256(query.encode())
    containers: dict[str, str] = {}
    with ExitStack() as stack:
        if url.startswith("duckdb://"):
            reader = _duckdb_reader(url, query, stack)
        else:
            reader = _sqlalchemy_reader(url, query, stack, containers)
        con.register("_sql_source", pa.RecordBatchReader.from_batches(reader.schema, _hashed(reader, digest.update)))
        try:
            con.execute(f"CREATE TABLE {ident(table)} AS SELECT * FROM _sql_source")
        except duckdb.Error as exc:
            raise sql_error(exc, display_url(url)) from exc
        finally:
            con.unregister("_sql_source")
    columns = [row[0] for row in con.execute(f"DESCRIBE {ident(table)}").fetchall()]
    nested = {**nested_columns(con, table), **containers}
    return Loaded(table, columns, display_url(url), nested=nested), digest.hexdigest()


def _hashed(batches: Iterable[pa.RecordBatch], update: Callable[[bytes], None]) -> Iterator[pa.RecordBatch]:
    """Yield every batch, passing its Arrow IPC bytes to `update` (a hash's) on the way."""
    for batch in batches:
        update(batch.serialize())
        yield batch


def _database_file(url: str, scheme: str) -> Path:
    path = Path(url[len(scheme) :])
    if not path.is_file():
        raise DataError(f"database file {path} (from {url}) does not exist.")
    return path


def _duckdb_reader(url: str, query: str, stack: ExitStack) -> pa.RecordBatchReader:
    """The query's result from a DuckDB database file (opened read-only), as an Arrow stream."""
    source = stack.enter_context(duckdb.connect(str(_database_file(url, "duckdb:///")), read_only=True))
    try:
        relation = source.sql(query)
    except duckdb.Error as exc:
        raise sql_error(exc, url) from exc
    if relation is None:
        raise DataError(f"the query on {url} returns no rows; give a SELECT query.")
    return relation.to_arrow_reader(CHUNK_ROWS)


def _sqlalchemy_reader(url: str, query: str, stack: ExitStack, containers: dict[str, str]) -> pa.RecordBatchReader:
    """The query's result through SQLAlchemy, fetched in chunks as Arrow text columns.

    `containers` receives, as the rows stream, each column that held a list, tuple or dict (by type name).
    """
    import sqlalchemy as sa

    shown = display_url(url)
    if url.startswith("sqlite:///"):
        _database_file(url, "sqlite:///")
    try:
        engine = sa.create_engine(url)
        stack.callback(engine.dispose)
        connection = stack.enter_context(engine.connect())
        result = connection.execution_options(stream_results=True).execute(sa.text(query))
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DataError(f"the query failed on {shown}: {first}") from exc
    names = result.keys()
    schema = pa.schema([(str(name), pa.string()) for name in names])
    return pa.RecordBatchReader.from_batches(schema, _text_batches(result, schema, containers))


def _text_batches(result, schema: pa.Schema, containers: dict[str, str]) -> Iterator[pa.RecordBatch]:
    """Chunks of a SQLAlchemy result as record batches of strings (None stays null), noting container columns."""
    for rows in result.partitions(CHUNK_ROWS):
        columns = list(zip(*rows, strict=True))
        for name, values in zip(schema.names, columns, strict=True):
            kind = next((type(v).__name__ for v in values if isinstance(v, (list, tuple, dict))), None)
            if kind is not None:
                containers.setdefault(name, f"Python {kind}")
        arrays = [pa.array([None if v is None else str(v) for v in values], pa.string()) for values in columns]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
