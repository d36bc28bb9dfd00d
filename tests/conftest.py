"""Shared test fixtures: the real MovieLens-100K folder, a tiny CSV writer, a tiny BERT, and the CLI run in-process."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lmrec.cli import main

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
