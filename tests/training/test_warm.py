"""Warm starts onto a grown catalogue: item rows follow their original ids, new items start fresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmrec.errors import RunError
from lmrec.models.base import build_model
from lmrec.training.warm import item_map, warm_start

OLD = ["", "a", "b", "c"]
NEW = ["", "b", "new", "a", "c", "other"]  # another preparation: other ids, two new items


def small(name: str, **params) -> dict:
    """Settings of a small model of each kind (GRU4Rec has no attention heads)."""
    return {"hidden": 8, "layers": 1, **({} if name == "gru4rec" else {"heads": 1}), **params}


def trained(name: str, n_items: int, **params) -> dict:
    torch.manual_seed(1)
    model = build_model(name, n_items, small(name, **params))
    return {"model": name, "state_dict": model.state_dict(), "params": model.config.model_dump()}


def test_the_item_map_matches_original_ids_and_marks_new_items() -> None:
    assert item_map(OLD, NEW).tolist() == [0, 2, -1, 1, 3, -1]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_rows_of_known_items_are_copied_by_id_and_the_rest_is_loaded_as_is(name: str) -> None:
    old = trained(name, 3)
    torch.manual_seed(2)
    model = build_model(name, 5, small(name))
    fresh = model.item_emb.weight.detach().clone()
    summary = warm_start(model, old, OLD, NEW)
    table, source = model.item_emb.weight.detach(), old["state_dict"]["item_emb.weight"]
    for new, before in enumerate(item_map(OLD, NEW)):
        expected = source[before] if before >= 0 else fresh[new]
        assert torch.equal(table[new], expected), (name, new)
    if name == "bert4rec":  # the [MASK] row follows the items
        assert torch.equal(table[6], source[4]) and model.out_bias.shape == (6,)
        assert torch.equal(model.out_bias[1], old["state_dict"]["out_bias"][2])
    others = [k for k in old["state_dict"] if k not in model.item_keys]
    assert all(torch.equal(model.state_dict()[k], old["state_dict"][k]) for k in others)
    assert summary["items_kept"] == 3 and summary["items_new"] == 2


def test_lmrec_keeps_its_new_catalogues_text_table() -> None:
    old = trained("lmrec", 3, text_dim=4, experts=1)
    model = build_model("lmrec", 5, small("lmrec", text_dim=4, experts=1))
    text = torch.randn(6, 4)
    model.set_item_text(text)
    warm_start(model, old, OLD, NEW)
    assert torch.equal(model.text_emb, text)
    assert torch.equal(model.item_emb.weight[1], old["state_dict"]["item_emb.weight"][2])


def test_models_without_an_item_table_to_carry_over_are_refused() -> None:
    old = {"model": "multvae", "state_dict": build_model("multvae", 3, {}).state_dict()}
    with pytest.raises(RunError, match="train it from scratch"):
        warm_start(build_model("multvae", 5, {}), old, OLD, NEW)
    with pytest.raises(RunError, match="cannot warm-start a sasrec model from a multvae"):
        warm_start(build_model("sasrec", 5, {}), old, OLD, NEW)


def test_counting_models_are_counted_again_rather_than_loaded() -> None:
    old = {"model": "pop", "state_dict": {"counts": torch.arange(4.0)}}
    model = build_model("pop", 5, {})
    assert warm_start(model, old, OLD, NEW)["loaded"] == 0
    assert np.allclose(model.counts.numpy(), 0)
