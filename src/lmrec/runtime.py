"""Process-wide runtime settings: thread counts that behave well on small shared machines, progress bars, signals."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lmrec.errors import Interrupted


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default `LMREC_THREADS`, else 1) and passive OpenMP waiting.

    Spinning OpenMP threads next to another busy process made training several times slower on a
    2-core machine, so OMP_WAIT_POLICY defaults to PASSIVE before torch starts its pool.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    n = threads if threads is not None else int(os.environ.get("LMREC_THREADS", "1") or 1)
    n = max(1, n)
    torch.set_num_threads(n)
    return n


_output = {"bars": True}


def set_progress(enabled: bool) -> None:
    """Allow or forbid progress bars in this process; the CLI forbids them under --quiet and off a terminal."""
    _output["bars"] = enabled


def show_progress() -> bool:
    """Whether progress bars may be drawn in this process (yes unless the CLI said no).

    The CLI passes it as the `progress` of every function it calls, so that --quiet and output that is
    not a terminal get log lines instead of bars; a bar that takes no such argument (downloads) asks it.
    """
    return _output["bars"]


_critical = {"depth": 0, "pending": 0, "raised": False}


def _raise_interrupted(signum: int, frame: object) -> None:
    """The handler of SIGINT / SIGTERM: raise `Interrupted` once, or hold it until a critical section ends.

    Signals after the first are ignored: the command is already stopping, and a second Ctrl-C must not
    cut short the recording of what was kept (SIGKILL still stops a process that hangs).
    """
    if _critical["raised"]:
        return
    if _critical["depth"]:
        _critical["pending"] = _critical["pending"] or signum
        return
    _critical["raised"] = True
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` during the block (in the main thread; elsewhere nothing changes).

    Not KeyboardInterrupt: typer turns that into a silent return, and SIGTERM would otherwise kill the
    process without a word. The main thread's main() (the CLI) uses it; a library caller keeps its own
    handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _critical.update(pending=0, raised=False)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold a SIGINT / SIGTERM that arrives during the block and raise it once the block is done.

    Used around writes that must not be cut in half (a checkpoint being serialised), where an exception
    raised mid-write would surface as the writer's own error instead of the interruption. Signal
    handlers run in the main thread only, so other threads' writes need no holding.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _critical["depth"] += 1
    try:
        yield
    finally:
        _critical["depth"] -= 1
        if not _critical["depth"] and _critical["pending"]:
            signum, _critical["pending"] = _critical["pending"], 0
            _critical["raised"] = True
            raise Interrupted(signum)
