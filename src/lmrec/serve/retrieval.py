"""Approximate top-k by inner product with FAISS, for catalogues too large to score exhaustively.

Below `EXACT_LIMIT` items the service scores every item with the model (`score_all`), which is exact and
takes well under a millisecond; above it, a FAISS inverted-file index (IVF, flat lists, inner product)
proposes candidates that are then re-scored exactly. IVF scans whole cells, so near-duplicate items that
share a cell are ranked exactly among themselves, where a graph index (HNSW) must walk each of them.
bench/faiss_recall.py measures recall@10 against exact scoring and the query latency at a million items.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_LIMIT = 100_000
TRAIN_SAMPLE = 100_000
DEFAULT_PROBES = 64


def default_lists(n: int) -> int:
    """About √n inverted lists (1,000 at a million items), each trained on enough points."""
    return max(1, min(int(math.sqrt(n)), n // 40))


class InnerProductIndex:
    """A FAISS IVF-Flat index over item vectors (rows 1..n of an item table; row 0 is padding)."""

    def __init__(self, vectors: np.ndarray, lists: int | None = None, probes: int = DEFAULT_PROBES, seed: int = 0):
        import faiss

        vectors = np.ascontiguousarray(vectors[1:], dtype=np.float32)
        n, dim = vectors.shape
        lists = lists or default_lists(n)
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > TRAIN_SAMPLE:
            sample = vectors[np.random.default_rng(seed).choice(n, TRAIN_SAMPLE, replace=False)]
        self.index.train(sample)
        self.index.add(vectors)
        self.probes = min(probes, lists)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item ids) `[B, k]` of the best items by inner product; missing slots have id 0."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=self.probes)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        return scores, ids + 1  # FAISS row r holds item r + 1; its "none" (-1) becomes padding (0)


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so that inner product is cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
