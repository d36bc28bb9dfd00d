"""User-facing errors: one clear sentence saying what was wrong and what to do."""

from __future__ import annotations

import signal


class LmrecError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""


class DataError(LmrecError):
    """The input data cannot be read or prepared as asked."""


class ConfigError(LmrecError):
    """A configuration key or value is invalid."""


class RunError(LmrecError):
    """A run directory or checkpoint cannot be used as asked."""


class ExplanationUnavailable(LmrecError, TypeError):
    """The model cannot say which past events drove a recommendation."""


class BackendUnsupported(LmrecError):
    """The serving backend cannot do what was asked (explanations need the torch model, not its ONNX export)."""


class Interrupted(BaseException):
    """The command was stopped by SIGINT or SIGTERM; `message` says what was interrupted and what was kept.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way up swallows it;
    code that owns state (the trainer, a preparation) catches it, records what it kept, and re-raises.
    """

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.message = message or f"interrupted by {signal.Signals(signum).name}; nothing was written"

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return self.message
