"""A model scored on a grown catalogue: histories translated to its ids, scores spread back."""

from __future__ import annotations

import numpy as np
import torch

from lmrec.evaluation.catalogue import MappedCatalogue
from lmrec.models.base import SequentialRecommender, build_model


def test_known_items_keep_their_scores_unknown_ones_rank_last_and_histories_drop_unknown_items() -> None:
    torch.manual_seed(0)
    inner = build_model("sasrec", 3, {"hidden": 8, "heads": 1, "layers": 1}).eval()
    mapping = np.array([0, 2, -1, 1, 3, -1])  # new ids 1..5 → inner ids (2, new, 1, 3, new)
    wrapped = MappedCatalogue(inner, mapping)
    history = torch.tensor([[0, 2, 1, 5, 3]])  # new ids: unknown 2 and 5 are dropped
    translated, lengths = wrapped.translate(history)
    assert translated.tolist() == [[0, 0, 0, 2, 1]] and lengths.tolist() == [2]
    scores = wrapped.score_all(history, torch.tensor([4]))
    expected = inner.score_all(torch.tensor([[0, 0, 0, 2, 1]]), torch.tensor([2]))[0]
    assert scores.shape == (1, 6)
    assert scores[0, [1, 3, 4]].tolist() == expected[[2, 1, 3]].tolist()
    assert torch.isinf(scores[0, [0, 2, 5]]).all() and bool((scores[0, [0, 2, 5]] < 0).all())
    assert isinstance(wrapped, SequentialRecommender) and wrapped.n_items == 5
