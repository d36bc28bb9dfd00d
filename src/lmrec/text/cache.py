"""On-disk embedding cache: (encoder weights + truncation length, text) → vector, so re-runs only encode new texts.

One `.npz` per `TextEncoder.cache_key` in the cache folder holds sorted 16-byte blake2b text hashes, the
float32 vectors and each text's untruncated token count (so that a report can say how much was cut). The
key is the rendered text itself, so the item-text template is part of it: change the template and the
texts, hence the keys, change with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from lmrec.atomic import atomic_write
from lmrec.text.encoder import UNKNOWN_CUT, EncodeStats, TextEncoder, check_texts, report_truncation

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "LMREC_CACHE_DIR"
KEY_BYTES = 16


def cache_root() -> Path:
    """lmrec's cache folder: `$LMREC_CACHE_DIR`, else `~/.cache/lmrec`."""
    return Path(os.environ.get(CACHE_DIR_ENV) or "~/.cache/lmrec").expanduser()


def default_cache_dir() -> Path:
    """Where embeddings are cached: `$LMREC_CACHE_DIR/embeddings`, else `~/.cache/lmrec/embeddings`."""
    return cache_root() / "embeddings"


def text_keys(texts: list[str]) -> np.ndarray:
    """One fixed-width hash per text (blake2b, 16 bytes), as a numpy bytes array."""
    digests = [hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest() for text in texts]
    return np.array(digests, dtype=f"S{KEY_BYTES}").reshape(len(texts))


class CacheFile:
    """The cached vectors of one encoder: sorted keys, vectors and each text's untruncated token count."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.keys, self.vectors, self.tokens = self._read()

    def _empty(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros(0, dtype=f"S{KEY_BYTES}"), np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)

    def _read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The file's arrays; an unreadable or inconsistent file is reported and treated as empty."""
        if not self.path.is_file():
            return self._empty()
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
                # Caches written before token counts were kept hold a truncated flag per text instead.
                tokens = data["tokens"] if "tokens" in data.files else np.where(data["truncated"], UNKNOWN_CUT, 0)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("embedding cache %s is unreadable (%s); it will be rebuilt", self.path, exc)
            return self._empty()
        if vectors.shape != (len(keys), self.dim) or tokens.shape != keys.shape:
            log.warning("embedding cache %s does not match the encoder's shape; it will be rebuilt", self.path)
            return self._empty()
        return keys.astype(f"S{KEY_BYTES}"), vectors.astype(np.float32), tokens.astype(np.int64)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each key: whether it is cached, and its row (meaningful only where cached)."""
        rows = np.searchsorted(self.keys, keys)
        clipped = np.minimum(rows, max(len(self.keys) - 1, 0))
        found = (rows < len(self.keys)) & (self.keys[clipped] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        return found, clipped

    def add(self, keys: np.ndarray, vectors: np.ndarray, tokens: np.ndarray) -> None:
        """Merge new entries with what is on disk now (another process may have added some) and save atomically."""
        on_disk = CacheFile(self.path, self.dim)
        all_keys = np.concatenate([on_disk.keys, keys])
        unique, first = np.unique(all_keys, return_index=True)
        self.keys = unique
        self.vectors = np.concatenate([on_disk.vectors, vectors])[first]
        self.tokens = np.concatenate([on_disk.tokens, tokens])[first]
        atomic_write(
            self.path,
            lambda handle: np.savez(handle, keys=self.keys, vectors=self.vectors, tokens=self.tokens),
        )


def encode_cached(
    encoder: TextEncoder,
    texts: list[str],
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Vectors of `texts` in input order ([N, dim] float32), encoding only texts not already cached.

    `texts` are rendered item texts; items without text need a fallback text from the caller (None is
    refused). The stats, cached count included, land in `encoder.last_stats` and are logged.
    """
    check_texts(texts)
    store = CacheFile(Path(cache_dir or default_cache_dir()) / f"{encoder.cache_key}.npz", encoder.dim)
    keys = text_keys(texts)
    found, rows = store.lookup(keys)
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    tokens = np.zeros(len(texts), dtype=np.int64)
    vectors[found], tokens[found] = store.vectors[rows[found]], store.tokens[rows[found]]
    missing = np.flatnonzero(~found)
    if len(missing):
        new_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
        new_vectors, new_tokens = encoder.encode_with_lengths([texts[i] for i in missing[first]], progress)
        vectors[missing], tokens[missing] = new_vectors[inverse], new_tokens[inverse]
        store.add(new_keys, new_vectors, new_tokens)
    encoder.last_stats = EncodeStats.of(tokens, encoder.max_length, cached=int(found.sum()))
    report_truncation(encoder.last_stats)
    return vectors
