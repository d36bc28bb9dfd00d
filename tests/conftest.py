"""Shared test fixtures: the real MovieLens-100K folder, a tiny CSV writer, a tiny BERT, tiny prepared datasets
(written in the documented on-disk layout), and the CLI run in-process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.cli import main
from synth_helpers import synth_prepared

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


def save_tiny_bert(folder: Path, words: list[str], max_positions: int = 64) -> Path:
    """Save a 2-layer, 32-wide BERT with a WordPiece vocabulary of `words` as a local model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build tiny local BERT folders for LoRA / fine-tuning tests (real weights, not mocks)."""

    def make(words: list[str], max_positions: int = 64) -> Path:
        return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words, max_positions)

    return make


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run the CLI with `argv`, returning (exit code, stdout, stderr)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


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


# -- the behaviour classifier's tests (data/test_labels.py, models/, training/ and inference/test_classifier.py) ---


@pytest.fixture(scope="module")
def tiny_bert(make_tiny_bert) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocabulary of a few words, saved as a model folder."""
    from classifier_helpers import WORDS

    return make_tiny_bert(WORDS, max_positions=128)


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory):
    """400 ratings of 30 users on 20 items with many tied timestamps; users like their favourite genre."""
    import random

    from classifier_helpers import GENRES
    from lmrec.data.prepare import prepare

    root = tmp_path_factory.mktemp("rated")
    rng = random.Random(3)
    items = [f"i{k},{GENRES[k % 4]} story {k},{GENRES[k % 4]}" for k in range(20)]
    (root / "items.csv").write_text("item_id,title,genre\n" + "\n".join(items) + "\n")
    rows = []
    for _ in range(400):
        user, item = rng.randrange(30), rng.randrange(20)
        rating = rng.choice([4, 5]) if item % 4 == user % 4 else rng.choice([1, 2, 3, 4])
        rows.append(f"u{user},i{item},{1000 + rng.randrange(60) * 10},{rating}")
    (root / "log.csv").write_text("user_id,item_id,timestamp,rating\n" + "\n".join(rows) + "\n")
    return prepare(
        root / "log.csv",
        root / "data",
        items=root / "items.csv",
        text_template="{title} | {genre}",
        split="temporal",
        cutoff=0.8,
        keep_repeats=True,
    )


@pytest.fixture(scope="module")
def events(rated):
    """The rated log's events with their values and strict pasts."""
    from lmrec.data.labels import load_events

    return load_events(rated)


TINY_RUN = ["train.epochs=2", "model.max_len=20", "model.hidden=16"]  # the serving and export tests' SASRec


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic log prepared with the default leave-one-out split."""
    return synth_prepared(tmp_path_factory.mktemp("synth-data"), users=120, items=60, events=3000)


@pytest.fixture(scope="session")
def tiny_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SASRec run on `prepared` trained for two epochs (hidden 16, max_len 20), shared by the serving and
    export tests (read, never changed)."""
    from lmrec import api

    out = tmp_path_factory.mktemp("tiny-runs") / "sasrec"
    api.train(prepared, out, model="sasrec", overrides=TINY_RUN)
    return out
