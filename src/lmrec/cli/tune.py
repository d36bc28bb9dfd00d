"""`lmrec tune`: parsing and the table of trials only; the search is `lmrec.api.tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmrec.runtime import show_progress

console = Console()


def tune(
    data: Path = typer.Argument(..., help="A prepared dataset directory (lmrec data prepare)."),
    model: str = typer.Option("sasrec", "--model", "-m", metavar="NAME", help="The model to tune."),
    out: Path = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Tuning folder (default runs/<dataset>-<model>-tune)."
    ),
    trials: int = typer.Option(20, "--trials", min=1, help="Finished trials to reach, earlier runs included."),
    timeout: float = typer.Option(None, "--timeout", min=0, help="Seconds for the search; checked between trials."),
    space: Path = typer.Option(
        None, "--space", metavar="FILE", help="Search space YAML (default: the model's shipped <model>.search.yaml)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Fix a config key for every trial, e.g. --set train.epochs=50."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed of every trial and of the sampler (default 0)."),
) -> None:
    """Search a model's hyper-parameters with Optuna (TPE, median pruning on validation); rerun to resume.

    Writes DIR/study.sqlite3, DIR/trials/<n>/ and DIR/best.yaml, which `lmrec train --config` takes.
    """
    from lmrec import api

    out = out or Path("runs") / f"{data.name}-{model}-tune"
    summary = api.tune(
        data,
        out,
        model=model,
        trials=trials,
        timeout=timeout,
        space=space,
        overrides=list(set_),
        seed=seed,
        progress=show_progress(),
    )
    console.print(_trials_table(summary))
    best = summary["best"]
    if best is None:
        console.print(f"no trial finished unpruned yet ({summary['ran']} ran now); rerun to go on → {out}")
        return
    ran = f"{summary['ran']} {'trial' if summary['ran'] == 1 else 'trials'}"
    console.print(
        f"{ran} ran now; best trial {best['trial']}, valid {best['metric']} {best['value']:.4f} "
        f"→ {best['config']} (lmrec train {data} --config {best['config']} --out RUN)"
    )


def _trials_table(summary: dict[str, Any]) -> Table:
    """Every trial of the study: number, state, validation score and sampled values."""
    from lmrec.training.search import describe

    table = Table(title=f"trials of {summary['study']}")
    for column in ("#", "state", f"valid {summary['metric']}", "values"):
        table.add_column(column, justify="right" if column != "values" else "left")
    for row in summary["trials"]:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        table.add_row(str(row["number"]), row["state"], value, escape(describe(row["params"])))
    return table


def register(app: typer.Typer) -> None:
    """Attach `lmrec tune` to the main app."""
    app.command()(tune)
