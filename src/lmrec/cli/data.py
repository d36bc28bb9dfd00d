"""`lmrec data`: prepare a behaviour log into a PreparedDataset, show its statistics, write synthetic logs."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from lmrec.cli.output import status

if TYPE_CHECKING:
    import click

log = logging.getLogger(__name__)
app = typer.Typer(no_args_is_help=True, help="Read, clean, sequence and split behaviour logs.")

_SEQUENCE_KEYS = ("min", "p25", "median", "p75", "p90", "max")


class _PrepareCommand(TyperCommand):
    """`data prepare`, whose help ends with the registered dataset names (the registry loads only for --help)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from lmrec.data.registry import list_datasets

        names = ", ".join(entry.name for entry in list_datasets())
        lines = textwrap.wrap(f"Registered datasets (SOURCE names): {names}.", 76, break_on_hyphens=False)
        self.epilog = "\b\n" + "\n".join(lines)  # \b: click keeps these lines, never cutting a name at a hyphen
        super().format_help(ctx, formatter)


@app.command("prepare", cls=_PrepareCommand)
def prepare_command(
    source: Annotated[
        str, typer.Argument(help="A file, folder, database URL or registered dataset name (listed below).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the prepared dataset to.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv|tsv|parquet|jsonl|movielens|recbole|amazon|sql (default: detected)."),
    ] = None,
    query: Annotated[str | None, typer.Option(help="SQL query to run when SOURCE is a database URL.")] = None,
    columns: Annotated[
        str | None, typer.Option(help="Every column of a headerless CSV/TSV in order, e.g. user,item,timestamp.")
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV field delimiter (default: sniffed).")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding: utf-8 (default), latin-1, utf-16.")] = None,
    user_col: Annotated[str | None, typer.Option(help="User id column (default: guessed by name).")] = None,
    item_col: Annotated[str | None, typer.Option(help="Item id column (default: guessed by name).")] = None,
    time_col: Annotated[str | None, typer.Option(help="Timestamp column (default: guessed by name).")] = None,
    type_col: Annotated[str | None, typer.Option(help="Event type column (default: guessed by name).")] = None,
    value_col: Annotated[str | None, typer.Option(help="Rating/value column (default: guessed by name).")] = None,
    items: Annotated[Path | None, typer.Option(help="Items table joined by item id (any readable format).")] = None,
    items_id_col: Annotated[str | None, typer.Option(help="Item id column of the items table.")] = None,
    text_template: Annotated[
        str | None, typer.Option(help='Item text from item columns, e.g. "{title} | {genres}".')
    ] = None,
    text_columns: Annotated[str | None, typer.Option(help='Shorthand: join these columns with " | ".')] = None,
    event_types: Annotated[str | None, typer.Option(help="Keep only these event types, e.g. click,purchase.")] = None,
    min_value: Annotated[float | None, typer.Option(help="Keep events whose value is at least this.")] = None,
    min_user_interactions: Annotated[int, typer.Option(help="Iterated k-core: events per user.")] = 0,
    min_item_interactions: Annotated[int, typer.Option(help="Iterated k-core: events per item.")] = 0,
    keep_repeats: Annotated[bool, typer.Option(help="Keep exact duplicate events (repeat consumption).")] = False,
    tie_break: Annotated[str, typer.Option(help="Order of events at the same time: row or item.")] = "row",
    split: Annotated[
        str | None,
        typer.Option(help="loo, temporal, cold-items or given (default: given for RecBole benchmark files, else loo)."),
    ] = None,
    cutoff: Annotated[
        str | None, typer.Option(help="Test cutoff: epoch seconds, ISO date, or fraction 0<x<1 (default 0.9).")
    ] = None,
    valid_cutoff: Annotated[
        str | None, typer.Option(help="Validation cutoff (default: last 10% of pre-cutoff events).")
    ] = None,
    targets: Annotated[
        Path | None, typer.Option(help="loo targets file: user_id, valid_item, test_item (original ids).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name for tables (default: from the source).")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad row, with its line number.")] = False,
    memory_limit: Annotated[
        str | None, typer.Option(help="DuckDB's working memory, e.g. 2GB (default 3GB or $LMREC_DUCKDB_MEMORY).")
    ] = None,
    temp_dir: Annotated[
        Path | None, typer.Option(help="Where DuckDB spills what exceeds --memory-limit (default: beside --out).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing prepared dataset in --out.")] = False,
    source_path: Annotated[
        Path | None, typer.Option("--source", help="Local copy of a registered dataset (no download).")
    ] = None,
) -> None:
    """Read, clean, index, sequence and split SOURCE into a prepared dataset folder."""
    from lmrec.cli import err_console
    from lmrec.data.prepare import prepare

    given = {
        "format": fmt, "query": query, "columns": columns, "delimiter": delimiter, "encoding": encoding,
        "user_col": user_col, "item_col": item_col, "time_col": time_col, "type_col": type_col,
        "value_col": value_col, "items": items, "items_id_col": items_id_col, "text_template": text_template,
        "text_columns": text_columns, "event_types": event_types, "min_value": min_value, "cutoff": cutoff,
        "valid_cutoff": valid_cutoff, "targets": targets, "name": name, "split": split,
        "memory_limit": memory_limit, "temp_dir": temp_dir,
    }  # fmt: skip
    options = {key: value for key, value in given.items() if value is not None}
    options.update(
        min_user_interactions=min_user_interactions,
        min_item_interactions=min_item_interactions,
        keep_repeats=keep_repeats,
        tie_break=tie_break,
        strict=strict,
    )
    with status(err_console, f"Preparing {source}", log) as update:
        dataset = prepare(
            source,
            out,
            source_path=source_path,
            overwrite=overwrite,
            on_step=lambda label: update(f"Preparing {source}: {label}"),
            **options,
        )
    Console().print(summary(dataset.manifest, dataset.path))


@app.command("stats")
def stats_command(
    directory: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
) -> None:
    """Show the counts, drops, sequence lengths and split of a prepared dataset."""
    from lmrec.data.dataset import PreparedDataset

    dataset = PreparedDataset(directory)
    Console().print(summary(dataset.manifest, dataset.path))


@app.command("synth")
def synth_command(
    users: Annotated[int, typer.Option(help="Number of users.")],
    items: Annotated[int, typer.Option(help="Number of items.")],
    events: Annotated[int, typer.Option(help="Number of events.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write the log to.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic behaviour log (for benchmarks and tests)."""
    from lmrec.cli import err_console
    from lmrec.data.synth import write_synthetic_log

    with status(err_console, f"Writing {events:,} events to {out}", log):
        info = write_synthetic_log(out, users, items, events, seed=seed)
    table = Table(title=f"Synthetic log {out}", show_header=False)
    for key, value in info.items():
        table.add_row(str(key), Text(_format(value)))
    Console().print(table)


def summary(manifest: dict, path: Path) -> Group:
    """Rich tables for a manifest: counts, drops, sequence lengths, split, text and the first bad rows."""
    table = Table(title=Text(f"{manifest.get('name', path.name)} ({path})"), show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rows read", _format(manifest["rows_read"]))
    for reason, count in manifest.get("dropped", {}).items():
        table.add_row(f"dropped: {reason.replace('_', ' ')}", _format(count))
    for key in ("users", "items", "interactions"):
        table.add_row(key, _format(manifest[key]))
    lengths = manifest.get("sequence_length", {})
    table.add_row(
        "sequence length " + "/".join(_SEQUENCE_KEYS),
        " / ".join(_format(lengths.get(k)) for k in _SEQUENCE_KEYS),
    )
    for key, value in manifest.get("split", {}).items():
        table.add_row(f"split: {key.replace('_', ' ')}", _format(value))
    text = manifest.get("text", {})
    table.add_row("text template", Text(str(text.get("template"))))
    table.add_row("items without text", _format(text.get("missing", 0)))
    chars = text.get("chars")
    if chars:
        keys = " / ".join(_SEQUENCE_KEYS)
        table.add_row(f"text characters {keys}", " / ".join(_format(chars.get(k)) for k in _SEQUENCE_KEYS))
    parts: list = [table]
    examples = manifest.get("examples", [])
    if examples:
        bad = Table(title="First bad rows")
        for column in ("line", "reason", "content"):
            bad.add_column(column)
        for example in examples:
            content = example.get("text") or ", ".join(f"{k}={v}" for k, v in example.get("values", {}).items())
            where = f"{Path(example['file']).name}:{example['line']}" if "file" in example else str(example["line"])
            bad.add_row(where, example["reason"].replace("_", " "), Text(content))
        parts.append(bad)
    return Group(*parts)


def _format(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    return str(value)
