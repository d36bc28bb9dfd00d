"""Prepare a dataset: read, clean, index, sequence and split a behaviour log into a PreparedDataset.

`prepare(source, out, **options)` runs the whole pipeline in DuckDB (out of core: it spills to a temp
folder beside `out` instead of failing on large inputs) and writes the layout documented in
`lmrec.data.dataset` atomically: everything goes to a temp folder beside `out`, which is renamed into
place once the fsynced manifest is written. Preparing the same content with the same options into the
same `out` again reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmrec.data import items as side_tables
from lmrec.data.clean import Cleaned, Filters, clean
from lmrec.data.columns import check_scalar, map_columns
from lmrec.data.dataset import EXAMPLES, FORMAT_VERSION, INTERACTIONS, ITEMS, MANIFEST, USERS, PreparedDataset
from lmrec.data.given import read_given
from lmrec.data.readers import detect, load_table, table_spec
from lmrec.data.registry import sha256_file
from lmrec.data.splits import SplitSpec, build_index, split_and_write
from lmrec.data.sql import display_url, is_url, load_sql
from lmrec.data.tables import Layout, Loaded
from lmrec.errors import ConfigError, DataError
from lmrec.runtime import deferred_interrupts
from lmrec.version import __version__

log = logging.getLogger(__name__)

MEMORY_LIMIT = os.environ.get("LMREC_DUCKDB_MEMORY", "3GB")  # DuckDB's working memory; beyond it, it spills to disk
_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
QUANTILES = {"min": 0.0, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}
# Options that do not change the result: `strict` only stops early; file options are hashed by content.
_NOT_FINGERPRINTED = {"strict", "items", "targets", "memory_limit", "temp_dir"}
# Options of the events' cleaning, which benchmark files (examples used as listed) do not take.
_NOT_FOR_GIVEN = (
    "columns", "delimiter", "user_col", "item_col", "time_col", "type_col", "value_col", "event_types",
    "min_value", "min_user_interactions", "min_item_interactions", "keep_repeats", "tie_break",
)  # fmt: skip


class PrepareOptions(BaseModel):
    """Every option of a preparation; lists also accept comma-separated strings ("click,purchase")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["csv", "tsv", "parquet", "jsonl", "movielens", "recbole", "amazon", "sql"] | None = None
    query: str | None = None
    columns: tuple[str, ...] | None = None
    delimiter: str | None = None
    encoding: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    type_col: str | None = None
    value_col: str | None = None
    items: Path | None = None
    items_id_col: str | None = None
    text_template: str | None = None
    text_columns: tuple[str, ...] | None = None
    event_types: tuple[str, ...] | None = None
    min_value: float | None = Field(None, allow_inf_nan=False)
    min_user_interactions: int = Field(0, ge=0)
    min_item_interactions: int = Field(0, ge=0)
    keep_repeats: bool = False
    tie_break: Literal["row", "item"] = "row"
    split: Literal["loo", "temporal", "cold-items", "given"] = "loo"
    cutoff: float | str | None = None
    valid_cutoff: float | str | None = None
    targets: Path | None = None
    name: str | None = None
    strict: bool = False
    memory_limit: str | None = None  # DuckDB's working memory ("2GB"); more data spills to temp_dir
    temp_dir: Path | None = None  # where DuckDB spills (default: a folder beside the output)

    @field_validator("columns", "text_columns", "event_types", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("memory_limit")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is not a size; write it like 512MB or 2GB")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PrepareOptions:
        if self.text_template is not None and self.text_columns:
            raise ValueError("give --text-template or --text-columns, not both")
        if self.split in ("loo", "given") and (self.cutoff is not None or self.valid_cutoff is not None):
            raise ValueError("--cutoff and --valid-cutoff apply to the temporal and cold-items splits")
        if self.split != "loo" and self.targets is not None:
            raise ValueError("--targets applies to the loo split only")
        return self


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    source_path: str | Path | None = None,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
    **options: object,
) -> PreparedDataset:
    """Prepare `source` (a path, a database URL or a registered dataset name) into the folder `out`.

    `source_path` is forwarded to the registry for a dataset name; `on_step` receives a short label as
    each step starts (the CLI shows it); `options` are the fields of `PrepareOptions`.
    """
    opts = parse_options(options)
    out = Path(out)
    started = time.perf_counter()

    def step(label: str) -> None:
        """Log the step and tell the caller."""
        log.debug("%s: %s", source, label)
        if on_step is not None:
            on_step(label)

    location, registered = _locate(source, source_path, opts)
    layout = None
    if not isinstance(location, str):
        options = {"columns": opts.columns, "delimiter": opts.delimiter, "encoding": opts.encoding}
        layout = detect(location, opts.format, **options, given=opts.split == "given")
    opts = _resolve_split(opts, layout)
    if layout is not None:
        step("hashing the input files")
        source_info = _file_source(location, layout, opts)
        existing = _existing(out, fingerprint(source_info["sha256"], opts), overwrite)
        if existing is not None:
            return existing
    limit = opts.memory_limit or MEMORY_LIMIT
    with _out_of_memory(limit), _workspace(out, limit, opts.temp_dir) as (stage, con):
        step("reading the events")
        if layout is None:
            events, source_info = _load_url(con, str(location), opts)
            existing = _existing(out, fingerprint(source_info["sha256"], opts), overwrite)
            if existing is not None:
                return existing
        elif layout.given is None:
            events = load_table(con, layout.events, "events_raw")
        name = opts.name or registered or (layout.name if layout else _url_name(str(location)))
        if layout is not None and layout.given is not None:
            manifest = _run_given(con, stage, layout, opts, step)
        else:
            manifest = _run(con, stage, events, layout, opts, step)
        manifest.update(
            name=name,
            fingerprint=fingerprint(source_info["sha256"], opts),
            source=source_info,
            options=opts.model_dump(mode="json"),
            resources={"memory_limit": opts.memory_limit or MEMORY_LIMIT, "threads": _threads()},
            lmrec_version=__version__,
            seconds=round(time.perf_counter() - started, 3),
        )
        _write_manifest(stage / MANIFEST, manifest)
        con.close()
        _publish(stage, out)
    log.info("prepared %s into %s in %.1f s", name, out, time.perf_counter() - started)
    return PreparedDataset(out)


def parse_options(options: dict) -> PrepareOptions:
    """Validate options into `PrepareOptions`; an invalid one raises ConfigError with one sentence."""
    try:
        return PrepareOptions(**options)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "options"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"unknown option {where}.") from None
        raise ConfigError(f"invalid {where}: {message}." if error["loc"] else f"{message}.") from None


def _resolve_split(opts: PrepareOptions, layout: Layout | None) -> PrepareOptions:
    """The options with the split benchmark files imply (`given`), refusing those that do not apply to them."""
    if layout is None or layout.given is None:
        if opts.split == "given":
            raise ConfigError(
                "--split given needs RecBole benchmark files (NAME.train.inter, NAME.valid.inter, NAME.test.inter)."
            )
        return opts
    if "split" in opts.model_fields_set and opts.split != "given":
        raise ConfigError(
            f"RecBole benchmark files carry their own split; drop --split {opts.split} (they are read as given)."
        )
    defaults = PrepareOptions()
    for name in _NOT_FOR_GIVEN:
        if getattr(opts, name) != getattr(defaults, name):
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} does not apply to RecBole benchmark files, whose examples are used as listed.")
    return opts.model_copy(update={"split": "given"})


def fingerprint(source_sha256: str, opts: PrepareOptions) -> str:
    """sha256 over the source content hash, the options that shape the result and the format version."""
    payload = {
        "format_version": FORMAT_VERSION,
        "source": source_sha256,
        "options": opts.model_dump(mode="json", exclude=_NOT_FINGERPRINTED),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _locate(source: str | Path, source_path: str | Path | None, opts: PrepareOptions) -> tuple[str | Path, str | None]:
    """The local path or URL to read, and the registered dataset name when the registry found it."""
    text = str(source)
    if is_url(text):
        file_options = [f"--{name}" for name in ("columns", "delimiter", "encoding") if getattr(opts, name)]
        if file_options:
            raise ConfigError(f"{', '.join(file_options)} apply to files, not to a database URL.")
        return text, None
    if opts.query is not None:
        raise ConfigError("--query applies to a database URL source (sqlite:///..., duckdb:///..., postgresql://...).")
    if opts.format == "sql":
        raise DataError(f"--format sql needs a database URL such as sqlite:///{text}, not a path.")
    path = Path(source)
    if path.exists() and source_path is None:
        return path, None
    if source_path is None and (path.suffix or len(path.parts) > 1):
        raise DataError(f"{path} does not exist.")
    try:
        from lmrec.data.registry import resolve_source
    except ImportError:
        raise DataError(f"{text} is not a file or folder, and this lmrec has no dataset registry.") from None
    return resolve_source(text, Path(source_path) if source_path is not None else None), text


def _file_source(location: Path, layout: Layout, opts: PrepareOptions) -> dict:
    """Manifest `source`: path, format, and the sha256 of every input file (and of all together)."""
    files = {role: spec.files for role, spec in layout.tables().items()}
    if opts.items is not None:
        files["items"] = table_spec(opts.items).files
    if opts.targets is not None:
        files["targets"] = [opts.targets]
    listed = [
        {"role": role, "path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for role, paths in files.items()
        for path in paths
        if path.is_file()
    ]
    combined = hashlib.sha256("".join(f"{f['role']}:{f['sha256']}\n" for f in listed).encode()).hexdigest()
    return {"path": str(location), "format": layout.format, "sha256": combined, "files": listed}


def _load_url(con: duckdb.DuckDBPyConnection, url: str, opts: PrepareOptions) -> tuple[Loaded, dict]:
    """Load a database query's result as the events table; return it and the manifest `source`."""
    events, digest = load_sql(con, url, opts.query, "events_raw")
    return events, {"path": display_url(url), "format": "sql", "sha256": digest, "query": opts.query}


def _existing(out: Path, wanted: str, overwrite: bool) -> PreparedDataset | None:
    """The prepared dataset already at `out` when it is this exact preparation; DataError on a conflict."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{out} exists and is not a prepared dataset; choose another --out (it is never replaced).")
    try:
        found = json.loads(manifest.read_text()).get("fingerprint")
    except (json.JSONDecodeError, OSError, AttributeError):
        found = None
    if overwrite:
        return None
    if found == wanted:
        log.info("%s already holds this preparation (same input and options); reusing it", out)
        return PreparedDataset(out)
    raise DataError(
        f"{out} holds a different preparation (other input or options); pass --overwrite to replace it "
        "or choose another --out."
    )


@contextmanager
def _out_of_memory(limit: str) -> Iterator[None]:
    """DuckDB running out of its memory limit (what it cannot spill) as one sentence saying what to change."""
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        first = (str(exc).strip().splitlines() or ["out of memory"])[0]
        raise DataError(f"the preparation needs more than --memory-limit {limit} ({first}); raise it.") from None


def _threads() -> int:
    """DuckDB's threads: $LMREC_THREADS, else every core."""
    return int(os.environ.get("LMREC_THREADS") or os.cpu_count() or 1)


@contextmanager
def _workspace(out: Path, memory_limit: str, temp_dir: Path | None) -> Iterator[tuple[Path, duckdb.DuckDBPyConnection]]:
    """A staging folder beside `out` and a DuckDB connection held to `memory_limit`, spilling what does not
    fit into `temp_dir` (default: the staging folder); both removed on the way out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    stage = out.parent / f".{out.name}.tmp-{tag}"
    spill = Path(temp_dir) / f"lmrec-spill-{tag}" if temp_dir is not None else stage / "_spill"
    stage.mkdir(parents=True)
    try:
        spill.mkdir(parents=True)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise ConfigError(
            f"cannot use --temp-dir {temp_dir} for spilling ({exc.strerror}); give a writable folder."
        ) from None
    config = {"memory_limit": memory_limit, "temp_directory": str(spill), "threads": _threads()}
    try:
        with duckdb.connect(config=config) as con:
            con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")
            yield stage, con
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)


def _run(
    con: duckdb.DuckDBPyConnection,
    stage: Path,
    events: Loaded,
    layout: Layout | None,
    opts: PrepareOptions,
    step: Callable[[str], None],
) -> dict:
    """Clean, index, split and write the tables into `stage`; return the manifest's counts and summaries."""
    mapping = _map_events(events, layout, opts)
    items_side, users_side = _side_tables(con, layout, opts, mapping, step)
    template = side_tables.choose_template(
        items_side, opts.text_template, opts.text_columns, layout.text_template if layout else None
    )
    side_tables.check_template(template, items_side)
    step("cleaning")
    filters = Filters(
        event_types=opts.event_types,
        min_value=opts.min_value,
        keep_repeats=opts.keep_repeats,
        min_user_interactions=opts.min_user_interactions,
        min_item_interactions=opts.min_item_interactions,
    )
    cleaned = clean(con, events, mapping, filters, strict=opts.strict)
    step("indexing and splitting")
    build_index(con)
    extra = [name for name, role in (("event_type", "type"), ("value", "value")) if mapping[role]]
    split = SplitSpec(opts.split, opts.cutoff, opts.valid_cutoff, opts.targets, opts.tie_break, opts.encoding)
    summary, lengths = split_and_write(con, split, stage / INTERACTIONS, extra)
    step("writing items and users")
    return _manifest_parts(con, stage, cleaned, (items_side, users_side), template, mapping, summary, lengths)


def _run_given(
    con: duckdb.DuckDBPyConnection, stage: Path, layout: Layout, opts: PrepareOptions, step: Callable[[str], None]
) -> dict:
    """Read benchmark files (`lmrec.data.given`) and write the tables into `stage`; return the manifest's parts."""
    mapping: dict[str, str | None] = {"user": "user_id", "history": "item_id_list", "item": "item_id"}
    items_side, users_side = _side_tables(con, layout, opts, mapping, step)
    template = side_tables.choose_template(items_side, opts.text_template, opts.text_columns, layout.text_template)
    side_tables.check_template(template, items_side)
    step("reading and stitching the examples")
    found = read_given(con, layout, stage, strict=opts.strict)
    step("writing items and users")
    sides = (items_side, users_side)
    return _manifest_parts(con, stage, found, sides, template, mapping, found.summary, found.lengths)


def _manifest_parts(
    con: duckdb.DuckDBPyConnection,
    stage: Path,
    counted: Cleaned,
    sides: tuple[side_tables.Side | None, side_tables.Side | None],
    template: str | None,
    mapping: dict[str, str | None],
    split: dict,
    lengths: np.ndarray,
) -> dict:
    """Write the items and users tables into `stage` and assemble the manifest from the counts of the
    events (cleaned log or given examples) and of the side tables."""
    items_side, users_side = sides
    dropped, examples = dict(counted.dropped), list(counted.examples)
    for side in sides:
        if side is not None:
            dropped.update(side.dropped)
            dropped.update(side_tables.unused_rows(con, side))
            examples += side.examples
    text = side_tables.write_items(con, items_side, template, stage / ITEMS)
    side_tables.write_users(con, users_side, stage / USERS)
    return {
        "format_version": FORMAT_VERSION,
        "users": counted.users,
        "items": counted.items,
        "interactions": counted.interactions,
        "rows_read": counted.rows_read,
        "dropped": dropped,
        "examples": examples,
        "columns": mapping,
        "split": split,
        "sequence_length": _quantiles(lengths) if len(lengths) else {},
        "text": text,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _map_events(events: Loaded, layout: Layout | None, opts: PrepareOptions) -> dict[str, str | None]:
    """The events' column per role (each one value per row); type and value are required only for a filter."""
    explicit = {
        "user": opts.user_col,
        "item": opts.item_col,
        "time": opts.time_col,
        "type": opts.type_col,
        "value": opts.value_col,
    }
    required = {"user", "item", "time"}
    if opts.event_types:
        required.add("type")
    if opts.min_value is not None:
        required.add("value")
    headed_csv = layout is not None and layout.events.kind == "csv" and layout.events.names is None
    hint = " (if the file has no header line, name every column in order with --columns)" if headed_csv else ""
    mapping = map_columns(events.columns, explicit, required, events.where, hint)
    check_scalar(mapping, events.nested, events.where)
    return mapping


def _side_tables(
    con: duckdb.DuckDBPyConnection,
    layout: Layout | None,
    opts: PrepareOptions,
    mapping: dict[str, str | None],
    step: Callable[[str], None],
) -> tuple[side_tables.Side | None, side_tables.Side | None]:
    """Load the items table (`--items`, else the layout's) and the layout's users table, one row per id."""
    specs = {
        "item": table_spec(opts.items, opts.encoding) if opts.items else (layout.items if layout else None),
        "user": layout.users if layout else None,
    }
    found: dict[str, side_tables.Side | None] = {}
    for role, spec in specs.items():
        found[role] = None
        if spec is not None:
            step(f"reading the {role}s table")
            loaded = load_table(con, spec, f"{role}s_raw")
            found[role] = side_tables.prepare_side(
                con, loaded, role, opts.items_id_col if role == "item" else None, mapping[role]
            )
    return found["item"], found["user"]


def _quantiles(lengths: np.ndarray) -> dict[str, float]:
    values = np.quantile(lengths, list(QUANTILES.values()))
    return {key: float(v) for key, v in zip(QUANTILES, values, strict=True)}


def _url_name(url: str) -> str:
    tail = url.rsplit("/", 1)[-1]
    return Path(tail).stem or "sql"


def _write_manifest(path: Path, manifest: dict) -> None:
    """Write the manifest and fsync it (and the data files beside it) before the folder is published."""
    with path.open("w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    for name in (INTERACTIONS, USERS, ITEMS, EXAMPLES):
        if not (path.parent / name).is_file():
            continue
        fd = os.open(path.parent / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(stage: Path, out: Path) -> None:
    """Move the finished staging folder to `out`, replacing what was there (already checked as allowed).

    A signal between the two renames is held until both are done, so `out` is never left missing."""
    shutil.rmtree(stage / "_spill", ignore_errors=True)
    old = None
    with deferred_interrupts():
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            out.rename(old)
        stage.rename(out)
        _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
