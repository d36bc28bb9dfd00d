"""The `lmrec` command: argument parsing only; each command group lives in its own module."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from lmrec.errors import LmrecError

app = typer.Typer(
    name="lmrec",
    help="Predict what users do next from behaviour logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _register_groups() -> None:
    from lmrec.cli import data, run

    app.add_typer(data.app, name="data", help="Read, clean, sequence and split behaviour logs.")
    run.register(app)
    from lmrec.cli import classify

    app.add_typer(classify.app, name="classify", help="Predict a behaviour (like, click, purchase) per user and item.")
    from lmrec.cli import serve

    serve.register(app)  # `lmrec serve` and the `lmrec registry` group


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turning user-facing errors into one sentence and exit code 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register_groups()
    try:
        app(args=argv, standalone_mode=False)
    except LmrecError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
