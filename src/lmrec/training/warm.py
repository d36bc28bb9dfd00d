"""Warm starts: a model on a grown catalogue begins from a trained one on an earlier preparation of it.

Item ids of two preparations differ (ids are assigned per preparation), so the rows of item-indexed
tables (`model.item_keys`) are copied by original item id: an item both catalogues hold keeps its
learned row, a new item keeps its fresh initialisation, and rows after the items (BERT4Rec's [MASK])
follow along. Every other weight whose name and shape fit is copied as it is; a catalogue's own buffers
(`catalogue_keys`, such as lmrec's text table, which the new catalogue's text fills) never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmrec.errors import RunError
from lmrec.models.base import SequentialRecommender


def item_map(old_ids: Sequence[str], new_ids: Sequence[str]) -> np.ndarray:
    """For each new item index (0 = padding), the old index of the same original id, or -1 when new."""
    old = {str(item): index for index, item in enumerate(old_ids) if index > 0}
    mapped = np.array([old.get(str(item), -1) for item in new_ids], dtype=np.int64)
    mapped[0] = 0
    return mapped


def _rows(fresh: torch.Tensor, trained: torch.Tensor, mapping: np.ndarray, n_old: int) -> torch.Tensor:
    """`fresh` with the rows of items known before taken from `trained` (and the rows past the items)."""
    extra = trained.shape[0] - (n_old + 1)
    if extra < 0 or fresh.shape[0] - len(mapping) != extra or fresh.shape[1:] != trained.shape[1:]:
        raise RunError(f"an item table of shape {tuple(trained.shape)} does not fit a catalogue of {n_old} items.")
    out = fresh.clone()
    known = torch.from_numpy(np.flatnonzero(mapping >= 0))
    out[known] = trained[torch.from_numpy(mapping[mapping >= 0])].to(out.dtype)
    if extra:
        out[len(mapping) :] = trained[n_old + 1 :].to(out.dtype)
    return out


def warm_start(
    model: SequentialRecommender, trained: dict[str, Any], old_ids: Sequence[str], new_ids: Sequence[str]
) -> dict[str, Any]:
    """Load a trained checkpoint (`{"model", "state_dict", ...}`) into `model`, item rows by original id."""
    if trained["model"] != model.name:
        raise RunError(f"cannot warm-start a {model.name} model from a {trained['model']} checkpoint.")
    if not model.trainable:
        return {"loaded": 0, "refit": "counted again from the training events"}
    if not model.item_keys:
        raise RunError(
            f"model {model.name} has no item table to carry over to a grown catalogue; train it from scratch."
        )
    mapping = item_map(old_ids, new_ids)
    own, state = model.state_dict(), trained["state_dict"]
    skip = set(model.catalogue_keys()) - set(model.item_keys)
    keep: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own or key in skip:
            continue
        if key in model.item_keys:
            keep[key] = _rows(own[key], value, mapping, len(old_ids) - 1)
        elif own[key].shape == value.shape:
            keep[key] = value
    model.load_state_dict(keep, strict=False)
    return {
        "loaded": len(keep),
        "skipped": sorted(set(state) - set(keep)),
        "items_kept": int((mapping[1:] >= 0).sum()),
        "items_new": int((mapping[1:] < 0).sum()),
    }
