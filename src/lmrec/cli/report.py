"""`lmrec report`: parsing only; the work is in `lmrec.api.report` (`lmrec.evaluation.report`).

matplotlib, torch and the API are imported inside the command so that `lmrec --help` starts fast.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def report(
    runs: list[Path] = typer.Argument(
        ..., metavar="RUN", help="Run directories trained on one prepared dataset; the first is the baseline."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", metavar="FILE", help="HTML file to write (default: report.html in the first run)."
    ),
    users: int = typer.Option(5, "--users", min=0, help="Example users shown with their history and top 10."),
) -> None:
    """Write one self-contained HTML report of runs that opens offline: dataset, training curves, test metrics
    with intervals, the paired comparison, metrics by segment, popularity bias and example users."""
    from lmrec import api
    from lmrec.runtime import show_progress

    path = api.report(runs, out, users=users, progress=show_progress())
    size = path.stat().st_size / 1024
    console.print(f"wrote {path} ({size:,.0f} KiB); open it in a browser, e.g. xdg-open {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach this command to the main app."""
    app.command()(report)
