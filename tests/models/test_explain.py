"""Explanations by occlusion: per item, equal to one removal at a time, zero on padding, for every model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lmrec.models.base import ModelConfig, SequentialRecommender, build_model, without_event

N = 12
MODELS = {
    "sasrec, 1 block": ("sasrec", {"hidden": 16, "heads": 2, "max_len": 6, "layers": 1}),
    "sasrec, 2 blocks, seen bias": ("sasrec", {"hidden": 16, "heads": 2, "max_len": 6, "seen_bias": True}),
    "sasrec, 3 blocks": ("sasrec", {"hidden": 16, "heads": 4, "max_len": 6, "layers": 3}),
    "lmrec": ("lmrec", {"hidden": 16, "heads": 2, "max_len": 6, "text_dim": 8}),
    "gru4rec": ("gru4rec", {"max_len": 6}),
    "bert4rec": ("bert4rec", {"hidden": 16, "heads": 2, "max_len": 6}),
    "multvae": ("multvae", {"max_len": 6}),
}


def randomised(name: str, params: dict) -> SequentialRecommender:
    """A model in eval mode whose weights are large enough that every past event moves every score."""
    model = build_model(name, N, params)
    if model.uses_item_text:
        model.set_item_text(torch.randn(N + 1, params["text_dim"]))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model.eval()


def one_removal_at_a_time(model: SequentialRecommender, history: Tensor, items: Tensor) -> Tensor:
    """The definition, unbatched: one scoring call per past event, its history rebuilt from Python lists."""
    lengths = (history > 0).sum(1)
    weights = torch.zeros(*items.shape, history.shape[1])
    for b, row in enumerate(history.tolist()):
        full = model.score(history[b : b + 1], lengths[b : b + 1], items[b : b + 1])[0]
        for j, item in enumerate(row):
            if item:
                rest = torch.tensor([[0, *row[:j], *row[j + 1 :]]])
                weights[b, :, j] = full - model.score(rest, lengths[b : b + 1] - 1, items[b : b + 1])[0]
    return weights


HISTORY = torch.tensor(
    [
        [0, 0, 0, 0, 0, 0, 3, 4, 5],  # shorter than the window
        [0, 0, 0, 2, 2, 7, 1, 9, 4],  # a repeated item
        [1, 2, 3, 4, 5, 6, 7, 8, 9],  # longer than the window: removing an event brings an older one in
        [0, 0, 0, 0, 0, 0, 0, 0, 5],  # one event: removing it leaves nothing
        [0, 0, 0, 0, 0, 0, 0, 0, 0],  # no event: nothing to explain
    ]
)
ITEMS = torch.tensor([[1, 4, 2], [2, 3, 8], [9, 10, 11], [1, 2, 5], [6, 7, 8]])


@pytest.mark.parametrize("case", MODELS)
def test_batched_occlusion_equals_one_removal_at_a_time(case: str) -> None:
    model = randomised(*MODELS[case])
    assert model.explain_method == "occlusion"
    with torch.inference_mode():
        weights = model.explain(HISTORY, (HISTORY > 0).sum(1), ITEMS)
        expected = one_removal_at_a_time(model, HISTORY, ITEMS)
    torch.testing.assert_close(weights, expected, atol=1e-4, rtol=1e-4)
    assert (weights[0].abs() > 1e-6).sum() > 0 and not torch.allclose(weights[1, 0], weights[1, 1])


@pytest.mark.parametrize("case", MODELS)
def test_padding_and_events_older_than_the_window_get_no_weight(case: str) -> None:
    model = randomised(*MODELS[case])
    weights = model.explain(HISTORY, (HISTORY > 0).sum(1), ITEMS)
    assert weights.shape == (5, 3, 9)
    assert (weights[0, :, :6] == 0).all() and (weights[1, :, :3] == 0).all() and (weights[3, :, :8] == 0).all()
    assert (weights[4] == 0).all()
    # The window holds the last 6 events: removing an older one leaves it as it was.
    torch.testing.assert_close(weights[2, :, :3], torch.zeros(3, 3), atol=1e-4, rtol=0)
    assert not weights.requires_grad


def test_chunks_of_removals_give_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    model = randomised(*MODELS["gru4rec"])
    whole = model.explain(HISTORY, (HISTORY > 0).sum(1), ITEMS)
    monkeypatch.setattr("lmrec.models.base.OCCLUSION_ROWS", 5)
    torch.testing.assert_close(model.explain(HISTORY, (HISTORY > 0).sum(1), ITEMS), whole)


def test_without_event_moves_older_events_up_one_slot() -> None:
    history = torch.tensor([[0, 3, 4, 5], [1, 2, 3, 4]])
    assert without_event(history, torch.tensor([2, 0])).tolist() == [[0, 0, 3, 5], [0, 2, 3, 4]]
    assert without_event(history, torch.tensor([3, 3])).tolist() == [[0, 0, 3, 4], [0, 1, 2, 3]]


class Pairs(SequentialRecommender):
    """Hand-made: past item 1 raises item 3 by 2 points, past item 2 raises item 4 by 1 point, nothing else."""

    trainable = False

    def __init__(self) -> None:
        super().__init__(4, ModelConfig(max_len=5))
        self.lift = torch.zeros(5, 5)
        self.lift[1, 3], self.lift[2, 4] = 2.0, 1.0

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        return self.mask_padding(self.lift[history].sum(1))


def test_each_item_is_explained_by_the_event_that_raises_it() -> None:
    weights = Pairs().explain(torch.tensor([[0, 1, 2]]), torch.tensor([2]), torch.tensor([[3, 4]]))
    assert weights.tolist() == [[[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]]


def test_a_trained_sasrec_explains_each_item_by_its_own_predecessor(chain_batch, train) -> None:
    model = build_model("sasrec", 10, {"hidden": 16, "heads": 2, "dropout": 0.0, "max_len": 6})
    train(model, chain_batch(10, 6), steps=60, lr=0.03)
    history = torch.tensor([[0, 0, 0, 0, 3, 7]])  # after 3 comes 4, after 7 comes 8
    weights = model.explain(history, torch.tensor([2]), torch.tensor([[8, 4]]))
    assert weights[0].argmax(1).tolist() == [5, 4]
