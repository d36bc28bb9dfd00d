"""Pop: counts from the training sequences, the same scores for every history, no explanations."""

import pytest
import torch

from lmrec.errors import ConfigError, ExplanationUnavailable, LmrecError
from lmrec.models.base import build_model
from lmrec.models.pop import Pop

N = 6


def fitted() -> Pop:
    model = build_model("pop", N, {})
    model.fit_statistics([torch.tensor([1, 2, 2, 5]), torch.tensor([2, 5]), torch.tensor([3])])
    return model


def test_scores_are_training_counts_with_padding_column_masked(right_aligned) -> None:
    model = fitted()
    scores = model.score_all(right_aligned([[1, 2], [4]], 3), torch.tensor([2, 1]))
    assert scores.shape == (2, N + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert scores[0, 1:].tolist() == [1, 3, 1, 0, 2, 0]
    assert torch.equal(scores[0], scores[1])
    assert int(scores[0].argmax()) == 2
    assert not model.trainable


def test_left_padding_does_not_change_scores(right_aligned, left_pad) -> None:
    model = fitted()
    history = right_aligned([[3, 4]], 2)
    assert torch.equal(
        model.score_all(history, torch.tensor([2])), model.score_all(left_pad(history, 5), torch.tensor([2]))
    )


def test_explain_says_plainly_it_is_not_supported(right_aligned) -> None:
    model = fitted()
    assert model.explain_method == "none"
    with pytest.raises(ExplanationUnavailable, match="cannot explain") as info:
        model.explain(right_aligned([[1, 2]], 2), torch.tensor([2]), torch.tensor([[3]]))
    assert isinstance(info.value, LmrecError) and isinstance(info.value, TypeError)


def test_counts_survive_a_state_dict_round_trip(right_aligned) -> None:
    model = fitted()
    restored = build_model("pop", N, {})
    restored.load_state_dict(model.state_dict())
    history = right_aligned([[1]], 1)
    assert torch.equal(restored.score_all(history, torch.tensor([1])), model.score_all(history, torch.tensor([1])))


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        build_model("pop", N, {"hidden": 3})
