"""`lmrec export`: parsing only; the work is in `lmrec.inference.onnx` (through `lmrec.api.export`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lmrec.errors import LmrecError

console = Console(soft_wrap=True)


def export(
    run: Path = typer.Argument(..., help="A run directory of a sasrec, gru4rec, bert4rec or lmrec model."),
    format_: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    int8: bool = typer.Option(False, "--int8", help="Quantise the encoder's weights to int8 (item table: float32)."),
    out: Path = typer.Option(None, "--out", "-o", metavar="DIR", help="Folder to write (default: RUN/export)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export already in DIR."),
    data: Path = typer.Option(None, "--data", help="The prepared dataset, if it moved."),
) -> None:
    """Export a run for serving with ONNX Runtime: the sequence encoder, the item table, a manifest of hashes."""
    from lmrec import api

    if format_ != "onnx":
        raise LmrecError(f"--format {format_} is not supported; the export format is onnx.")
    manifest = api.export(run, out, format=format_, int8=int8, overwrite=overwrite, data=data)
    folder = out if out is not None else run / "export"
    check = manifest["check"]
    lines = [
        f"exported {manifest['model']} ({manifest['precision']}, opset {manifest['opset']}, max_len "
        f"{manifest['max_len']}, {manifest['n_items']:,} items) to {folder}",
        *(f"  {name}  sha256 {digest[:16]}…" for name, digest in manifest["files"].items()),
        f"checked on {check['histories']} histories: largest score difference from torch "
        f"{check['max_abs_diff_vs_torch']:.2g}"
        + (f"; int8 top-10 overlap with torch {check['int8_top10_overlap']:.3f}" if "int8_top10_overlap" in check
           else ""),
        f"serve it: lmrec serve {run} --backend onnx" + (f" --export {out}" if out is not None else ""),
    ]  # fmt: skip
    console.print("\n".join(lines), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Attach `export` to the main app."""
    app.command()(export)
