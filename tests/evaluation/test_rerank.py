"""Re-ranking only permutes the top-K: ranks inside move, ranks outside stay."""

from __future__ import annotations

import numpy as np

from lmrec.evaluation.rerank import reranked_ranks


def test_targets_inside_the_top_k_take_their_new_place() -> None:
    ranks = np.array([0, 2, 5, 1])
    targets = np.array([7, 9, 4, 3])
    reordered = np.array([[1, 7, 2], [9, 5, 6], [1, 2, 3], [8, 2, 3]])
    # target 7 moved from 0 to 1; 9 from 2 to 0; rank 5 is outside the top 3 and stays;
    # target 3 was at rank 1 and is now at 2
    assert reranked_ranks(ranks, targets, reordered).tolist() == [1, 0, 5, 2]
