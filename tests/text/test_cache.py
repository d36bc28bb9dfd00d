"""encode_cached: hits skip the model, only new texts are encoded, vectors come back unchanged and in order."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lmrec.errors import DataError
from lmrec.text import TextEncoder, default_cache_dir, encode_cached

TEXTS = [
    "Toy Story (1995) | Animation Children's Comedy",
    "GoldenEye (1995) | Action Adventure Thriller",
    "Four Rooms (1995) | Thriller",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.fixture
def encoded(encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the model is run on, in the order it sees them."""
    seen: list[str] = []
    original = TextEncoder._encode_batch

    def counting(self: TextEncoder, texts: list[str]):
        seen.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(TextEncoder, "_encode_batch", counting)
    return seen


def test_a_hit_skips_the_model_and_returns_identical_vectors(
    encoder: TextEncoder, encoded: list[str], tmp_path: Path
) -> None:
    first = encode_cached(encoder, TEXTS, tmp_path)
    assert sorted(encoded) == sorted(TEXTS)
    np.testing.assert_allclose(first, encoder.encode(TEXTS), atol=1e-6)
    encoded.clear()
    again = encode_cached(encoder, TEXTS[::-1], tmp_path)
    assert encoded == []
    np.testing.assert_array_equal(again, first[::-1])
    assert encoder.last_stats is not None and encoder.last_stats.cached == 3


def test_a_fully_cached_run_never_loads_the_weights(encoder: TextEncoder, tmp_path: Path) -> None:
    encode_cached(encoder, TEXTS, tmp_path)
    fresh = TextEncoder()
    encode_cached(fresh, TEXTS, tmp_path)
    assert fresh._model is None


def test_only_new_texts_are_encoded_once_each(encoder: TextEncoder, encoded: list[str], tmp_path: Path) -> None:
    encode_cached(encoder, TEXTS[:2], tmp_path)
    encoded.clear()
    vectors = encode_cached(encoder, [TEXTS[2], TEXTS[0], "Get Shorty (1995) | Action", TEXTS[2]], tmp_path)
    assert sorted(encoded) == sorted([TEXTS[2], "Get Shorty (1995) | Action"])
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_allclose(vectors[:2], encoder.encode([TEXTS[2], TEXTS[0]]), atol=1e-6)


def test_truncation_is_reported_for_cached_texts_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = TextEncoder(max_length=8)
    long = "one two three four five six seven eight nine ten"
    encode_cached(encoder, [long, "short"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="lmrec.text.encoder"):
        encode_cached(encoder, [long, "short"], tmp_path)
    assert encoder.last_stats is not None and encoder.last_stats.truncated == 1
    assert "1 of 2 texts (2 from the embedding cache) were longer than 8 tokens" in caplog.text


def test_an_unreadable_cache_is_reported_and_rebuilt(
    encoder: TextEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / f"{encoder.cache_key}.npz").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="lmrec.text.cache"):
        vectors = encode_cached(encoder, TEXTS, tmp_path)
    assert "unreadable" in caplog.text
    np.testing.assert_array_equal(encode_cached(encoder, TEXTS, tmp_path), vectors)


def test_missing_text_is_refused(encoder: TextEncoder, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fallback text"):
        encode_cached(encoder, [TEXTS[0], None], tmp_path)  # type: ignore[list-item]


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
    monkeypatch.delenv("LMREC_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "lmrec" / "embeddings"


def test_the_report_says_by_how_much_texts_were_cut_from_cache_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = TextEncoder(max_length=8)
    long = "one two three four five six seven eight nine ten"  # 10 words + 2 special tokens: 4 cut
    encode_cached(encoder, [long, "short"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="lmrec.text.encoder"):
        encode_cached(encoder, [long, "short"], tmp_path)
    assert encoder.last_stats is not None and encoder.last_stats.cut == (4,)
    assert "truncated by a median of 4 tokens (at most 4)" in caplog.text


def test_a_cache_from_before_token_counts_still_reports_its_truncated_texts(tmp_path: Path) -> None:
    encoder = TextEncoder(max_length=8)
    long = "one two three four five six seven eight nine ten"
    encode_cached(encoder, [long, "short"], tmp_path)
    path = tmp_path / f"{encoder.cache_key}.npz"
    with np.load(path) as data:
        keys, vectors, tokens = data["keys"], data["vectors"], data["tokens"]
    np.savez(path, keys=keys, vectors=vectors, truncated=tokens > 8)  # the older layout
    encode_cached(encoder, [long, "short"], tmp_path)
    stats = encoder.last_stats
    assert stats is not None and (stats.truncated, stats.cached, stats.cut) == (1, 2, ())
