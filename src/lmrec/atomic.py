"""Crash-safe writes (a temporary file in the same folder, fsync, then rename over the target), and reading
back the JSON records they write as untrusted input."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lmrec.runtime import deferred_interrupts


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(fileobj)` on a temp file beside `path`, then atomically replace `path` with it."""
    with deferred_interrupts():  # Ctrl-C mid-write is raised once the file is whole (or removed)
        _write_and_replace(path, write)


def _write_and_replace(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give them the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    """The process umask (reading it requires setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json_object(path: Path, error: type[Exception], remedy: str, what: str = "") -> dict[str, Any]:
    """A JSON object from `path`; unreadable, not JSON or not an object is one sentence of `error` with `remedy`."""
    name = f"{path} ({what})" if what else str(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{name} is corrupt or unreadable ({exc}); {remedy}.") from None
    if not isinstance(data, dict):
        raise error(f"{name} does not hold a JSON object; {remedy}.")
    return data
