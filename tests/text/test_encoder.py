"""TextEncoder: the bundled all-MiniLM-L6-v2 offline, truncation reporting, and clear errors for bad folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from transformers import BertConfig, BertModel, BertTokenizer, GPT2Config, GPT2Model

from lmrec.errors import ConfigError, DataError
from lmrec.text import OnnxTextEncoder, TextEncoder, default_model_path

WORDS = ["toy", "story", "drama", "war", "comedy", "list"]
TOY = "Toy Story (1995) | Animation Children's Comedy"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def tiny_bert(folder: Path, vocab_size: int | None = None, words: list[str] = WORDS) -> Path:
    """Save a 1-layer BERT and its WordPiece tokenizer (`vocab_size` rows: default, one per token)."""
    folder.mkdir(parents=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    config = BertConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_default_model_is_the_bundled_minilm() -> None:
    path = default_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_vectors_are_384_dim_normalised_and_meaningful(encoder: TextEncoder) -> None:
    vectors = encoder.encode([TOY, "Toy Story 2", "Schindler's List | Drama War"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_output_follows_input_order_whatever_the_batching(encoder: TextEncoder) -> None:
    texts = ["a much longer text about a war drama set in the past", "short", TOY, ""]
    together = encoder.encode(texts)
    one_by_one = np.stack([encoder.encode([text])[0] for text in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_truncation_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    encoder = TextEncoder(max_length=8)
    with caplog.at_level(logging.WARNING, logger="lmrec.text.encoder"):
        encoder.encode(["short text", "one two three four five six seven eight nine ten"])
    assert encoder.last_stats is not None and encoder.last_stats.truncated == 1
    assert "1 of 2 texts were longer than 8 tokens" in caplog.text


def test_model_id_identifies_the_weights(encoder: TextEncoder, tmp_path: Path) -> None:
    assert TextEncoder().model_id == encoder.model_id and len(encoder.model_id) == 64
    assert TextEncoder(tiny_bert(tmp_path / "tiny")).model_id != encoder.model_id
    assert TextEncoder(max_length=32).cache_key != encoder.cache_key


def test_missing_text_is_refused(encoder: TextEncoder) -> None:
    with pytest.raises(DataError, match="text 1 is NoneType"):
        encoder.encode(["fine", None])  # type: ignore[list-item]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TextEncoder(tmp_path / "nowhere")


def test_folder_without_config_or_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        TextEncoder(tmp_path)
    folder = tiny_bert(tmp_path / "tiny")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="has no model weights"):
        TextEncoder(folder)


def test_folder_without_a_tokenizer(tmp_path: Path) -> None:
    GPT2Model(GPT2Config(vocab_size=20, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="turns text into no tokens"):
        TextEncoder(tmp_path)


def test_tokenizer_larger_than_the_embedding_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has 11 tokens but the model has only 6 embedding rows"):
        TextEncoder(tiny_bert(tmp_path / "tiny", vocab_size=6))


def test_unloadable_weights_fail_clearly_on_first_encode(tmp_path: Path) -> None:
    folder = tiny_bert(tmp_path / "tiny")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    encoder = TextEncoder(folder)
    with pytest.raises(ConfigError, match="cannot load the weights"):
        encoder.encode(["toy story"])


def test_max_length_beyond_the_model_limit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="limit of 64 tokens"):
        TextEncoder(tiny_bert(tmp_path / "tiny"), max_length=100)


def test_onnx_backend_gives_the_same_vectors_and_exports_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    folder = tiny_bert(tmp_path / "tiny")
    texts = ["toy story", "war drama list comedy", "story"]
    onnx = OnnxTextEncoder(folder, onnx_dir=tmp_path / "onnx")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(onnx.encode(texts), TextEncoder(folder).encode(texts), atol=1e-5)
    assert "torchvision" not in caplog.text  # the exporter's notes about operators text encoders never use
    exported = onnx.onnx_path.stat().st_mtime_ns
    again = OnnxTextEncoder(folder, onnx_dir=tmp_path / "onnx")
    again.encode(texts)
    assert again.onnx_path == onnx.onnx_path and again.onnx_path.stat().st_mtime_ns == exported
    assert again._model is None and again.cache_key == TextEncoder(folder).cache_key
