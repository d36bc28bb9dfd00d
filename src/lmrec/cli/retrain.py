"""`lmrec retrain`: parsing and printing only; the work is in `lmrec.training.retrain`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lmrec.cli.output import print_tensorboard
from lmrec.errors import ConfigError

if TYPE_CHECKING:
    from lmrec.training.retrain import RetrainResult

console = Console()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """Seconds of a period such as `90s`, `15m`, `6h` or `1d`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"--every {text!r} is not a period; write it like 90s, 15m, 6h or 1d.")
    return float(match.group(1)) * _UNITS[match.group(2)]


def retrain(
    registry: Path = typer.Argument(..., metavar="REGISTRY", help="The registry whose promoted version to retrain."),
    store: str = typer.Option(
        None, "--store", metavar="URL", help="The event store (default sqlite:///REGISTRY/events.sqlite, as serve's)."
    ),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of the new events (the latest) only the gate sees."),
    valid: float = typer.Option(0.1, "--valid", help="Share of the new events before the holdout for early stopping."),
    margin: float = typer.Option(0.0, "--margin", help="ΔNDCG@10 the candidate's paired 95% lower bound must exceed."),
    min_events: int = typer.Option(100, "--min-events", help="Skip the round with fewer new events than this."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Change the candidate's config, e.g. --set train.max_seconds=300."
    ),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train the candidate from scratch, not warm."),
    seed: int = typer.Option(None, "--seed", help="Random seed of the candidate (default the version's)."),
    every: str = typer.Option(None, "--every", metavar="PERIOD", help="Keep retraining every PERIOD (6h, 30m)."),
    as_json: bool = typer.Option(False, "--json", help="Print each round as one JSON line."),
) -> None:
    """Retrain the promoted version on the events stored since it was trained; promote it if the gate says so.

    One round by default (for cron or an orchestrator); --every loops. The registry changes in one atomic
    step at the end of a round, so an interrupted or killed retrain leaves it (and its services) as it was.
    """
    from lmrec.training.retrain import ROUNDS, RetrainOptions, retrain_every
    from lmrec.training.retrain import retrain as run_round

    if store is None:
        if not (registry / "events.sqlite").is_file():
            raise ConfigError(f"no event store at {registry / 'events.sqlite'}; give the service's with --store URL.")
        store = f"sqlite:///{registry / 'events.sqlite'}"

    options = RetrainOptions(
        holdout=holdout, valid=valid, margin=margin, min_events=min_events, overrides=tuple(set_),
        from_scratch=from_scratch, seed=seed,
    )  # fmt: skip

    def show(outcome: RetrainResult | Exception) -> None:
        if isinstance(outcome, Exception):
            console.print(f"[red]round failed[/red], registry unchanged: {outcome}", highlight=False)
        elif as_json:
            typer.echo(json.dumps(outcome.summary()))
        else:
            console.print(_describe(outcome), highlight=False)
            if outcome.version is not None:  # each round's candidate run keeps its TensorBoard logs
                print_tensorboard(console, registry / ROUNDS, registry / ROUNDS)

    if every is None:  # one round: its failure is the command's (exit 1)
        show(run_round(registry, store, options))
        return
    retrain_every(registry, store, parse_every(every), options, on_round=show)


def _describe(result: RetrainResult) -> str:
    """One paragraph on a round for the console."""
    if result.skipped:
        return f"nothing to retrain: {result.skipped}."
    gate, lineage = result.gate, result.lineage
    decision = "promoted" if result.promoted else "registered, not promoted"
    return (
        f"version {result.version} (from version {result.parent}, {lineage['events_used']:,} new events): "
        f"{decision}. Gate on the last {gate['window']['events']:,} events: NDCG@10 {gate['candidate']:.4f} "
        f"against {gate['current']:.4f}, {gate['reason']}. {result.seconds['total']:.0f} s "
        f"({result.seconds['train']:.0f} s training)."
    )


def register(app: typer.Typer) -> None:
    """Attach `retrain` to the main app."""
    app.command()(retrain)
