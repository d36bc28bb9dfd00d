"""BERT4Rec: cloze masking, the [MASK] slot, padding, explanations, learning, checkpoints, config errors."""

import pytest
import torch
import torch.nn.functional as F

from lmrec.errors import ConfigError
from lmrec.models.base import build_model
from lmrec.models.bert4rec import BERT4Rec

N = 10


def make(**params) -> BERT4Rec:
    return build_model("bert4rec", N, {"hidden": 16, "heads": 2, "dropout": 0.0, "max_len": 6, **params})


def test_scores_cover_items_only_with_padding_column_masked(right_aligned) -> None:
    model = make().eval()
    scores = model.score_all(right_aligned([[3, 4], [1, 2, 3, 4, 5, 6]], 6), torch.tensor([2, 6]))
    assert scores.shape == (2, N + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    assert model.output_embeddings().shape == (N + 1, 17)


def test_history_longer_than_max_len_keeps_the_most_recent(right_aligned) -> None:
    model = make(max_len=3).eval()
    long = right_aligned([[1, 2, 3, 4, 5, 6]], 6)
    assert torch.equal(model.score_all(long, torch.tensor([6])), model.score_all(long[:, -3:], torch.tensor([3])))


def test_left_padding_does_not_change_scores(right_aligned, left_pad) -> None:
    model = make().eval()
    history = right_aligned([[3, 4, 7], [5]], 3)
    lengths = torch.tensor([3, 1])
    expected = model.score_all(history, lengths)
    for extra in (1, 3, 6):
        assert torch.allclose(model.score_all(left_pad(history, extra), lengths), expected, atol=1e-5)


def test_cloze_mask_never_masks_padding_and_masks_every_row(right_aligned) -> None:
    items = right_aligned([[1], [2, 3], [4, 5, 6, 7, 8, 9, 1]] * 200, 7)
    for mask_prob in (0.01, 0.2, 1.0):
        masked = make(mask_prob=mask_prob).cloze_mask(items)
        assert not (masked & (items == 0)).any()
        assert masked.any(1).all()
    rate = make(mask_prob=0.2, mask_last_prob=0.0).cloze_mask(items)[2::3, :-1].float().mean()
    assert 0.15 < float(rate) < 0.25


def test_explain_is_occlusion_per_item_over_the_history(right_aligned) -> None:
    model = make().eval()
    assert model.explain_method == "occlusion"
    history = right_aligned([[2, 5, 7], [4]], 8)
    items = torch.tensor([[1, 3], [6, 8]])
    weights = model.explain(history, torch.tensor([3, 1]), items)
    assert weights.shape == (2, 2, 8)
    assert (weights[:, :, :5] == 0).all() and (weights[1, :, :7] == 0).all()
    assert (weights[0, :, 5:] != 0).all()
    assert not torch.allclose(weights[0, 0], weights[0, 1])
    with torch.inference_mode():
        assert torch.allclose(model.explain(history, torch.tensor([3, 1]), items), weights)


def test_learns_that_item_i_is_followed_by_i_plus_1(chain_batch, train, right_aligned) -> None:
    model = make(mask_last_prob=0.5)
    train(model, chain_batch(N, 7, copies=4), steps=200, lr=0.01)
    history = right_aligned([[1, 2], [1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8]], 6)
    assert model.score_all(history, torch.tensor([2, 3, 1])).argmax(1).tolist() == [3, 7, 9]


def test_loss_uses_the_injected_objective_on_masked_positions(chain_batch) -> None:
    model = make()
    seen = []
    model.objective = lambda h, t, table: seen.append((h.shape, t)) or F.cross_entropy(h @ table.T, t)
    model.loss(chain_batch(N, 7)).backward()
    ((shape, targets),) = seen
    assert shape[1] == 17 and shape[0] == targets.shape[0] >= 9
    assert (targets > 0).all() and (targets <= N).all()


def test_state_dict_round_trip_gives_identical_scores(right_aligned) -> None:
    model = make().eval()
    restored = make().eval()
    restored.load_state_dict(model.state_dict())
    history = right_aligned([[1, 6, 2]], 3)
    lengths = torch.tensor([3])
    assert torch.equal(restored.score_all(history, lengths), model.score_all(history, lengths))


def test_config_errors_are_named() -> None:
    with pytest.raises(ConfigError, match="mask_rate"):
        build_model("bert4rec", N, {"mask_rate": 0.3})
    with pytest.raises(ConfigError, match="heads"):
        build_model("bert4rec", N, {"hidden": 16, "heads": 3})
