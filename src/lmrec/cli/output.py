"""How the command line talks while it works: log lines on stderr, progress bars on a terminal only, --quiet.

The library logs (INFO: one line per epoch, what was encoded, why training stopped) and draws bars only
when asked and `lmrec.runtime.show_progress()` allows; this module decides both for the whole command:
on a terminal, bars with the log lines above them; elsewhere (a file, a pipe, CI), no bars and each line
prefixed by its logger, e.g. `lmrec.training.trainer: epoch 3  loss 5.4321  …`; under --quiet, neither bars
nor INFO lines, only warnings and the results.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from tqdm import tqdm

from lmrec.runtime import set_progress, show_progress

_WARNING = logging.Formatter("%(levelname)s %(name)s: %(message)s")
_PLAIN = logging.Formatter("%(name)s: %(message)s")
_ABOVE_BARS = logging.Formatter("%(message)s")


class _LogLines(logging.Handler):
    """Log records on the current stderr, above any progress bar: warnings with their level and logger, INFO
    lines alone next to bars or with their logger without them."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return _WARNING.format(record)
        return (_ABOVE_BARS if show_progress() else _PLAIN).format(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's own contract: a failing handler reports itself and never raises
            self.handleError(record)


@contextmanager
def console_output() -> Iterator[None]:
    """Show log records on stderr during one command, then put logging and bars back as they were (the tests
    run many commands in one process)."""
    handler, lmrec = _LogLines(), logging.getLogger("lmrec")
    level, bars = lmrec.level, show_progress()
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        lmrec.setLevel(level)
        set_progress(bars)


def configure(quiet: bool) -> None:
    """Bars only on a terminal and not --quiet; lmrec's INFO lines unless --quiet (warnings always)."""
    set_progress(not quiet and sys.stderr.isatty())
    logging.getLogger("lmrec").setLevel(logging.WARNING if quiet else logging.INFO)


@contextmanager
def status(console: Console, message: str, log: logging.Logger) -> Iterator[Callable[[str], None]]:
    """A spinner with `message` where bars are shown, else the message as a log line; yields the function
    that replaces the message (a new stage of the work)."""
    if not show_progress():
        log.info("%s", message)
        yield lambda text: log.info("%s", text)
        return
    with console.status(message) as spinner:
        yield spinner.update


def print_tensorboard(console: Console, logs: Path, logdir: Path) -> None:
    """Say how to see training curves in TensorBoard if `logs` were written, from `logdir`: the folder that
    holds the run (and its siblings, to compare them)."""
    if logs.is_dir():
        line = f"TensorBoard: tensorboard --logdir {shlex.quote(str(logdir))}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)
