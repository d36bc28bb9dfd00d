"""GRU4Rec: shapes, padding handling, explanations, learning a toy pattern, checkpoints, config errors."""

import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.models.base import build_model
from lmrec.models.gru4rec import GRU4Rec

N = 10


def make(**params) -> GRU4Rec:
    return build_model("gru4rec", N, {"embedding": 16, "hidden": 16, "dropout": 0.0, "max_len": 6, **params})


def test_shapes_and_padding_column(right_aligned) -> None:
    model = make().eval()
    history = right_aligned([[3, 4], [1, 2, 3, 4]], 4)
    assert model.hidden(history).shape == (2, 4, 16)
    scores = model.score_all(history, torch.tensor([2, 4]))
    assert scores.shape == (2, N + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


def test_left_padding_does_not_change_states_or_scores(right_aligned, left_pad) -> None:
    model = make(layers=2).eval()
    history = right_aligned([[3, 4, 7], [5]], 3)
    padded = left_pad(history, 3)
    lengths = torch.tensor([3, 1])
    assert torch.allclose(model.hidden(history), model.hidden(padded)[:, 3:], atol=1e-6)
    assert torch.allclose(model.score_all(history, lengths), model.score_all(padded, lengths), atol=1e-6)


def test_explain_weights_history_positions(right_aligned) -> None:
    model = make().eval()
    history = right_aligned([[2, 5, 7], [4]], 4)
    weights = model.explain(history, torch.tensor([3, 1]), torch.tensor([[1, 3], [6, 8]]))
    assert weights.shape == (2, 2, 4)
    assert weights[0, :, 1:].abs().sum() > 0
    assert (weights[:, :, 0] == 0).all() and (weights[1, :, :3] == 0).all()


def test_learns_that_item_i_is_followed_by_i_plus_1(chain_batch, train, right_aligned) -> None:
    model = make()
    train(model, chain_batch(N, 5), steps=150, lr=0.02)
    history = right_aligned([[1, 2], [4, 5, 6], [8]], 6)
    assert model.score_all(history, torch.tensor([2, 3, 1])).argmax(1).tolist() == [3, 7, 9]


def test_state_dict_round_trip_gives_identical_scores(right_aligned) -> None:
    model = make().eval()
    restored = make().eval()
    restored.load_state_dict(model.state_dict())
    history = right_aligned([[1, 6, 2]], 3)
    lengths = torch.tensor([3])
    assert torch.equal(restored.score_all(history, lengths), model.score_all(history, lengths))


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="hiden"):
        build_model("gru4rec", N, {"hiden": 3})
