"""One cross-process file lock for every place that needs one (run folders, the model registry, downloads).

filelock takes an `flock` on POSIX, which the kernel releases when the holding process dies, so a lock
left by a killed process never blocks anyone; the lock file itself stays in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path, wait: float | None = None, busy: Callable[[], Exception] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block.

    `wait`: None waits as long as it takes, 0 does not wait, N waits up to N seconds; when the lock
    stays taken, the exception made by `busy` is raised (filelock's Timeout without one).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if wait is None else wait)
    try:
        lock.acquire()
    except Timeout:
        if busy is None:
            raise
        raise busy() from None
    try:
        yield
    finally:
        lock.release()


def is_locked(path: Path) -> bool:
    """Whether another holder has the lock on `path` now (False when the lock file cannot even be made)."""
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:
        return False  # a read-only folder: nobody can be writing to it either
    lock.release()
    return False
