"""Mult-VAE: bag scoring, padding, explanations, learning co-occurrence, KL annealing, checkpoints."""

import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.models.base import Batch, build_model
from lmrec.models.multvae import MultVAE

N = 9


def make(**params) -> MultVAE:
    return build_model("multvae", N, {"hidden": 32, "latent": 8, "max_len": 6, "anneal_steps": 10, **params})


def groups_batch(right_aligned) -> Batch:
    """Users who consume whole groups {1, 2, 3}, {4, 5, 6}, {7, 8, 9}, in every order."""
    rows = [[a, b, c] for g in (1, 4, 7) for a, b, c in [(g, g + 1, g + 2), (g + 2, g, g + 1), (g + 1, g + 2, g)]]
    items = right_aligned(rows * 4, 4)
    return Batch(items=items, fresh=items > 0, users=torch.arange(items.shape[0]))


def test_shapes_and_padding_column(right_aligned) -> None:
    model = make().eval()
    scores = model.score_all(right_aligned([[3, 4, 3], [1]], 4), torch.tensor([3, 1]))
    assert scores.shape == (2, N + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    assert model.bag(right_aligned([[3, 4, 3]], 4)).tolist() == [[0, 0, 1, 1, 0, 0, 0, 0, 0]]


def test_left_padding_does_not_change_scores(right_aligned, left_pad) -> None:
    model = make().eval()
    history = right_aligned([[3, 4, 7], [5]], 3)
    lengths = torch.tensor([3, 1])
    assert torch.allclose(model.score_all(history, lengths), model.score_all(left_pad(history, 3), lengths))


def test_explain_by_occlusion(right_aligned) -> None:
    model = make().eval()
    history = right_aligned([[2, 5, 7], [4]], 4)
    weights = model.explain(history, torch.tensor([3, 1]), torch.tensor([[1, 3], [6, 8]]))
    assert weights.shape == (2, 2, 4)
    assert weights[0, :, 1:].abs().sum() > 0
    assert (weights[:, :, 0] == 0).all() and (weights[1, :, :3] == 0).all()


def test_learns_which_items_go_together(right_aligned) -> None:
    model = make()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = groups_batch(right_aligned)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()
    history = right_aligned([[1, 2], [6, 4], [8, 9]], 2)
    scores = model.score_all(history, torch.tensor([2, 2, 2])).scatter(1, history, float("-inf"))
    assert scores.argmax(1).tolist() == [3, 5, 7]


def test_kl_anneal_counter_counts_training_steps_and_is_restored(right_aligned) -> None:
    model = make()
    batch = groups_batch(right_aligned)
    model.train()
    for _ in range(4):
        model.loss(batch)
    model.eval()
    model.loss(batch)
    assert int(model.anneal_step) == 4
    assert float(model.beta()) == pytest.approx(0.2 * 4 / 10)
    restored = make()
    restored.load_state_dict(model.state_dict())
    assert int(restored.anneal_step) == 4
    for _ in range(20):
        model.train().loss(batch)
    assert float(model.beta()) == pytest.approx(0.2)


def test_state_dict_round_trip_gives_identical_scores(right_aligned) -> None:
    model = make().eval()
    restored = make().eval()
    restored.load_state_dict(model.state_dict())
    history = right_aligned([[1, 6, 2]], 3)
    lengths = torch.tensor([3])
    assert torch.equal(restored.score_all(history, lengths), model.score_all(history, lengths))


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="latent_dim"):
        build_model("multvae", N, {"latent_dim": 3})
