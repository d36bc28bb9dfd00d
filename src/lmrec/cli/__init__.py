"""The `lmrec` command: argument parsing only; each command group lives in its own module."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lmrec.cli.output import configure, console_output
from lmrec.errors import Interrupted, LmrecError
from lmrec.runtime import signals_interrupt
from lmrec.version import __version__

app = typer.Typer(
    name="lmrec",
    help="Predict what users do next from behaviour logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, option names never cut
)
err_console = Console(stderr=True)


def _argument_type(self: typer.core.TyperArgument, ctx: object) -> str | None:
    """An argument with a metavar shows it alone in the help, as an option does (typer 0.29 appends its
    internal type, `RUN <list[Path]>`); arguments without one keep typer's `<path>`."""
    return None if self.metavar is not None else self.display_type(ctx)


typer.core.TyperArgument.display_type_rich = _argument_type


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lmrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars and no log lines but warnings; results only."
    ),
) -> None:
    """Predict what users do next from behaviour logs."""
    configure(quiet)


def _register_groups() -> None:
    """Attach the command groups once (main may run many times in one process, as in the tests)."""
    if app.registered_groups:
        return
    from lmrec.cli import classify, data, export, report, retrain, run, serve, tune

    app.add_typer(data.app, name="data", help="Read, clean, sequence and split behaviour logs.")
    run.register(app)
    app.add_typer(classify.app, name="classify", help="Predict a behaviour (like, click, purchase) per user and item.")
    serve.register(app)  # `lmrec serve` and the `lmrec registry` group
    retrain.register(app)
    report.register(app)
    tune.register(app)
    export.register(app)


def _command(argv: list[str]) -> str:
    """The command words of an argument list, e.g. `lmrec data prepare`, for messages."""
    words = [arg for arg in argv[:2] if not arg.startswith("-")]
    return " ".join(["lmrec", *words[: 2 if words[:1] in (["data"], ["classify"], ["registry"]) else 1]])


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; user errors are one sentence and exit 1, usage errors the usage and exit 2,
    SIGINT / SIGTERM one line saying what was kept and exit 130 / 143."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _register_groups()
    try:
        with signals_interrupt(), console_output():
            code = app(args=argv, prog_name="lmrec", standalone_mode=False)
    except LmrecError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(1)
    except Interrupted as exc:
        err_console.print(f"{_command(argv)}: {exc.message}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print(f"{_command(argv)}: interrupted", highlight=False, markup=False)
        sys.exit(130)
    except typer.Abort:
        err_console.print("aborted", highlight=False, markup=False)
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors of typer's bundled click: the usage line and the problem
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:  # typer returns an Exit's code in non-standalone mode
        sys.exit(code)
