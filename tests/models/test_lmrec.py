"""The text-aware lmrec model: item table from text, cold items scored by text, inductive transfer."""

from __future__ import annotations

import torch

from lmrec.models.base import build_model
from lmrec.training.losses import full_softmax_ce

N_ITEMS, TEXT_DIM = 30, 12


def _model(**params):
    base = {"hidden": 16, "max_len": 10, "text_dim": TEXT_DIM, "experts": 2, "dropout": 0.0, "text_dropout": 0.0}
    model = build_model("lmrec", N_ITEMS, {**base, **params})
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N_ITEMS + 1, TEXT_DIM), dim=1)
    text[0] = 0
    model.set_item_text(text)
    return model, text


def test_scores_have_padding_at_minus_infinity_and_right_shape() -> None:
    model, _ = _model()
    model.fit_statistics([torch.arange(1, 21)])
    model.eval()
    scores = model.score_all(torch.tensor([[0, 0, 3, 4, 5]]), torch.tensor([3]))
    assert scores.shape == (1, N_ITEMS + 1)
    assert scores[0, 0] == float("-inf") and torch.isfinite(scores[0, 1:]).all()


def test_cold_items_use_text_only_and_twins_score_alike() -> None:
    model, text = _model()
    text[25] = text[5]  # item 25 is never seen in training but has the same text as item 5
    model.set_item_text(text)
    model.fit_statistics([torch.arange(1, 21)])
    assert not model.has_id[25] and model.has_id[5]
    with torch.no_grad():
        model.item_emb.weight.zero_()  # without ID signal the twins must be indistinguishable
    model.eval()
    scores = model.score_all(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    assert torch.isclose(scores[0, 5], scores[0, 25])
    table = model.item_table()
    assert not torch.allclose(table[25], torch.zeros_like(table[25]))


def test_learns_a_pattern_from_text_alone_and_transfers() -> None:
    model, _ = _model(use_id=False)
    model.objective = full_softmax_ce()
    rows = torch.tensor([[i, i + 1, i + 2, i + 3] for i in range(1, N_ITEMS - 2)])
    from lmrec.models.base import Batch

    batch = Batch(items=rows, fresh=torch.ones_like(rows, dtype=torch.bool), users=torch.arange(len(rows)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    model.fit_statistics([rows.flatten()])
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()
    scores = model.score_all(torch.tensor([[4, 5, 6]]), torch.tensor([3]))
    assert int(scores.argmax()) == 7
    assert not model.item_emb.weight.requires_grad and model.item_emb.weight.abs().sum() == 0
    # the same weights serve a catalogue of another size (inductive): only the text table changes
    other = build_model("lmrec", 40, {**model.config.model_dump(), "use_id": False})
    state = {k: v for k, v in model.state_dict().items() if k not in ("text_emb", "has_id", "item_emb.weight")}
    missing = other.load_state_dict(state, strict=False).missing_keys
    assert set(missing) == {"text_emb", "has_id", "item_emb.weight"}


def test_id_dropout_drops_id_embeddings_only_while_training() -> None:
    model, _ = _model(id_dropout=0.5)
    model.fit_statistics([torch.arange(1, 21)])
    with torch.no_grad():
        model.item_emb.weight.fill_(1.0)
    model.eval()
    text_only = model.text_norm(model.adapter(model.text_emb))
    assert torch.equal(model.item_table()[1:21], text_only[1:21] + 1.0)  # every seen item keeps its ID at eval
    model.train()
    torch.manual_seed(1)
    with_id = (model.item_table()[1:21] - text_only[1:21]).abs().sum(1) > 0.5
    assert 0 < with_id.sum() < 20  # some seen items lost their ID embedding in this step
    assert torch.equal(model.item_table()[21:], text_only[21:] * 1.0)  # unseen items never had one


def test_use_text_false_is_an_id_only_model_that_takes_no_text() -> None:
    model = build_model("lmrec", N_ITEMS, {"hidden": 16, "max_len": 10, "use_text": False})
    assert not model.uses_item_text
    with torch.no_grad():
        model.text_emb.normal_()  # text, if any were installed, must not move a score
    model.eval()
    table = model.item_table()
    assert torch.equal(table[1:], model.item_emb.weight[1:]) and table[0].abs().sum() == 0
    assert torch.isfinite(model.score_all(torch.tensor([[1, 2, 3]]), torch.tensor([3]))[0, 1:]).all()


def test_settings_that_leave_an_item_unknown_are_refused() -> None:
    import pytest

    from lmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="use_id and use_text cannot both be false"):
        build_model("lmrec", N_ITEMS, {"use_id": False, "use_text": False})


VOTES = {"recent": 2, "decay": 0.5, "window": 2, "text_weight": 1.5, "history_weight": -1.0, "popularity_weight": 0.1}
SEQUENCES = [torch.arange(1, 21), torch.tensor([3, 7, 9, 11, 3, 5]), torch.tensor([2, 4, 6, 8])]


def _blended(weight: float = 2.0):
    model, text = _model(neighbourhood_weight=weight, neighbourhood=VOTES)
    model.fit_statistics(SEQUENCES)
    return model.eval(), text


def test_neighbourhood_adds_weighted_itemknn_votes_to_the_transformers_log_probabilities() -> None:
    blended, text = _blended(weight=2.0)
    alone = build_model("lmrec", N_ITEMS, blended.config.model_dump() | {"neighbourhood_weight": 0.0})
    alone.load_state_dict({k: v for k, v in blended.state_dict().items() if not k.startswith("neighbourhood.")})
    knn = build_model("itemknn", N_ITEMS, {**VOTES, "max_len": 10})
    knn.fit_statistics(SEQUENCES)
    knn.set_item_text(text)
    history, lengths = torch.tensor([[0, 3, 7, 9], [1, 2, 3, 4]]), torch.tensor([3, 4])
    with torch.no_grad():
        expected = alone.eval().score_all(history, lengths).log_softmax(-1) + 2.0 * knn.score_all(history, lengths)
        scores = blended.score_all(history, lengths)
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    assert (scores[:, 0] == float("-inf")).all() and torch.isfinite(scores[:, 1:]).all()
    assert not blended.scores_by_table and alone.scores_by_table


def test_neighbourhood_explanations_are_the_blended_scores_occlusion() -> None:
    blended, _ = _blended()
    history, lengths, items = torch.tensor([[0, 3, 7, 9]]), torch.tensor([3]), torch.tensor([[11, 5]])
    with torch.no_grad():
        weights = blended.explain(history, lengths, items)
        full = blended.score_all(history, lengths)[0, items[0]]
        for slot, shorter in ((1, [0, 0, 7, 9]), (2, [0, 0, 3, 9]), (3, [0, 0, 3, 7])):
            dropped = blended.score_all(torch.tensor([shorter]), torch.tensor([2]))[0, items[0]]
            assert torch.allclose(weights[0, :, slot], full - dropped, atol=1e-5)
    assert (weights[0, :, 0] == 0).all()


def test_neighbourhood_counts_survive_a_checkpoint_and_never_transfer() -> None:
    blended, _ = _blended()
    fresh = build_model("lmrec", N_ITEMS, blended.config.model_dump())
    fresh.load_state_dict(blended.state_dict())  # buffers sized from the checkpoint
    history, lengths = torch.tensor([[0, 3, 7, 9]]), torch.tensor([3])
    assert torch.equal(fresh.eval().score_all(history, lengths), blended.score_all(history, lengths))
    assert {f"neighbourhood.{k}" for k in ("row_ptr", "cols", "counts")} <= set(blended.catalogue_keys())
    assert not blended.inductive  # counts of one catalogue: a zero-shot catalogue switch is refused
    import pytest

    with pytest.raises(ValueError, match="neighbourhood_weight=0"):
        blended.switch_catalogue(torch.zeros(5, TEXT_DIM))


def test_new_items_score_by_their_text_through_both_parts() -> None:
    blended, text = _blended()
    grown = blended.with_items(N_ITEMS + 2, [N_ITEMS + 1, N_ITEMS + 2], torch.stack([text[9], -text[9]]))
    history = torch.tensor([[0, 3, 7, 9]])
    with torch.no_grad():
        votes = grown.neighbourhood.score_all(history, torch.tensor([3]))[0]
        scores = grown.score_all(history, torch.tensor([3]))[0]
    assert scores.shape == (N_ITEMS + 3,) and torch.isfinite(scores[1:]).all()
    # No counts yet: the last item's twin and its opposite differ by twice their text votes, from item 9
    # (cosine ±1) and, at half weight, item 7.
    twin = 1.5 * (1.0 + 0.5 * torch.dot(text[7], text[9]))
    assert torch.isclose(votes[N_ITEMS + 1] - votes[N_ITEMS + 2], 2 * twin, atol=1e-4)
    assert scores[N_ITEMS + 1] > scores[N_ITEMS + 2]
    assert blended.n_items == N_ITEMS  # the served model is left as it was


def test_neighbourhood_text_votes_need_the_models_text() -> None:
    import pytest

    from lmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="needs use_text=true"):
        build_model("lmrec", N_ITEMS, {"use_text": False, "neighbourhood_weight": 1, "neighbourhood": VOTES})
    with pytest.raises(ConfigError, match="neighbourhood"):
        build_model("lmrec", N_ITEMS, {"neighbourhood_weight": 1, "neighbourhood": {"recnet": 2}})


def test_the_inference_item_table_is_remembered_until_a_weight_changes() -> None:
    model, text = _model()
    model.fit_statistics(SEQUENCES)
    model.eval()
    with torch.inference_mode():
        first = model.item_table()
        assert model.item_table() is first  # nothing changed: not recomputed
    with torch.no_grad():
        model.adapter.bias.add_(0.5)  # in place, as an optimiser step
        moved = model.item_table()
        assert not torch.allclose(moved, first) and torch.allclose(moved, model._fresh_table())
        model.set_item_text(text.flip(0))
        assert torch.allclose(model.item_table(), model._fresh_table())
    assert model.item_table().requires_grad  # with gradients it is always computed afresh
    model.train()
    with torch.no_grad():
        assert model.item_table() is not model.item_table()
