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
