"""Shared test fixtures: the real MovieLens-100K folder and a tiny CSV writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$LMREC_DATA_DIR, else shared/data beside the repository; skipped off CI when absent, failed on CI."""
    root = Path(os.environ.get("LMREC_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (root / "ml-100k").is_dir():
        if not os.environ.get("CI"):
            pytest.skip(f"the real data is not at {root}/ml-100k")
        pytest.fail(f"the real data must be at {root}/ml-100k on CI")
    return root


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write text to a file under tmp_path and return its path."""

    def _write(name: str, text: str, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode(encoding))
        return path

    return _write
