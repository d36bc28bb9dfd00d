"""A tiny prepared dataset with a learnable pattern, written in the documented on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def write_prepared(path: Path, sequences: list[list[int]], n_items: int) -> Path:
    """Write sequences (item ids 1..n_items) as a leave-one-out PreparedDataset."""
    path.mkdir(parents=True, exist_ok=True)
    users = np.concatenate([[u] * len(s) for u, s in enumerate(sequences)]).astype(np.int32)
    items = np.concatenate(sequences).astype(np.int32)
    split = np.concatenate([[0] * (len(s) - 2) + [1, 2] for s in sequences]).astype(np.int8)
    stamps = np.concatenate([np.arange(len(s), dtype=float) for s in sequences])
    pq.write_table(
        pa.table({"user_idx": users, "item_idx": items, "timestamp": stamps, "split": split}),
        path / "interactions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_idx": np.arange(len(sequences), dtype=np.int32),
                "user_id": [f"u{u}" for u in range(len(sequences))],
            }
        ),
        path / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_idx": np.arange(1, n_items + 1, dtype=np.int32),
                "item_id": [f"i{i}" for i in range(1, n_items + 1)],
                "text": [f"item number {i}" for i in range(1, n_items + 1)],
                "cold": [False] * n_items,
            }
        ),
        path / "items.parquet",
    )
    manifest = {
        "format_version": 1,
        "users": len(sequences),
        "items": n_items,
        "interactions": len(items),
        "fingerprint": f"test-{len(items)}-{n_items}",
        "name": "tiny",
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def cyclic_dataset(tmp_path: Path) -> Path:
    """Users walk a cycle of 20 items (i → i+1) from random starting points: a perfectly learnable pattern."""
    rng = np.random.default_rng(0)
    n_items = 20
    sequences = []
    for _ in range(60):
        start, length = int(rng.integers(n_items)), int(rng.integers(6, 30))
        sequences.append([(start + t) % n_items + 1 for t in range(length)])
    return write_prepared(tmp_path / "data", sequences, n_items)


@pytest.fixture
def make_prepared():
    """The `write_prepared` helper, for tests that need several datasets."""
    return write_prepared
