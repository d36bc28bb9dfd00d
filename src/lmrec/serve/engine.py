"""One loaded model version, ready to serve: its catalogue, scoring (exact or FAISS), explanations,
popularity fallback and similar items.

An Engine is built completely before it is served and never changes afterwards; a reload or new items
build a new Engine and swap one reference, so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from lmrec.errors import LmrecError
from lmrec.inference.recommender import PastEvent, Recommender, popularity, strongest_events
from lmrec.models.base import SequentialRecommender
from lmrec.serve.retrieval import EXACT_LIMIT, InnerProductIndex, normalised
from lmrec.serve.store import StoredEvent, StoredItem

log = logging.getLogger(__name__)


class Unsupported(LmrecError):
    """The served model cannot do what was asked (e.g. score new items by text)."""


@dataclass(frozen=True)
class Ranked:
    """An item index with its score and, when asked, the history items that drove it."""

    item: int
    score: float
    because: list[PastEvent] | None = None


@dataclass(frozen=True)
class LiveSequence:
    """A user's history as the model reads it."""

    items: np.ndarray
    unknown: int
    known_user: bool


class Engine:
    """A model version with its catalogue: the dataset's items plus items added through the service."""

    def __init__(
        self,
        recommender: Recommender,
        version: str,
        items: Sequence[StoredItem] = (),
        exact_limit: int = EXACT_LIMIT,
    ) -> None:
        self.version = version
        self.recommender = recommender
        self.dataset = recommender.dataset
        self.item_ids: list[str] = [str(i) for i in self.dataset.item_ids]
        self.item_index: dict[str, int] = dict(self.dataset.item_index)
        self._added_titles: dict[int, str] = {}
        self._titles: dict[int, str] = {}
        model = self._with_items(recommender.model, items) if items else copy.deepcopy(recommender.model)
        self.model = model
        self.dot_product = model.scores_by_table
        self.exact_limit = exact_limit
        self.index = None
        if self.dot_product and self.n_items > exact_limit:
            self.index = InnerProductIndex(self._table.numpy())
        self._popularity, self._pop_scores = popularity(self.dataset)

    @property
    def n_items(self) -> int:
        """Catalogue size (item indices are 1..n_items)."""
        return len(self.item_ids) - 1

    @property
    def model_name(self) -> str:
        """The registered name of the served model."""
        return self.model.name

    @property
    def accepts_items(self) -> bool:
        """Whether new items can be scored from their text (the lmrec model)."""
        return self.model.uses_item_text and hasattr(self.model, "text_emb")

    def title(self, item: int) -> str:
        """Display title of an item index (memoised)."""
        title = self._titles.get(item)
        if title is None:
            title = self._added_titles.get(item) or (
                self.dataset.item_title(item) if item <= self.dataset.n_items else self.item_ids[item]
            )
            self._titles[item] = title
        return title

    def indices(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Item indices of the known ids (in order) and the ids the catalogue does not have."""
        known, unknown = [], []
        for item_id in ids:
            index = self.item_index.get(item_id)
            if index is None:
                unknown.append(item_id)
            else:
                known.append(index)
        return np.asarray(known, dtype=np.int64), unknown

    def live_sequence(self, user_id: str, stored: Sequence[StoredEvent]) -> LiveSequence:
        """Training history from the dataset, then every stored event in time order that the dataset does not
        hold already (a retraining snapshot holds the store's events up to its `events_through` id; unknown
        items are skipped)."""
        user = self.dataset.user_index.get(user_id)
        base = self.dataset.sequence(user) if user is not None else np.zeros(0, dtype=np.int64)
        stored = [e for e in stored if e.id > self.dataset.events_through]
        extra, unknown = self.indices([e.item_id for e in stored])
        return LiveSequence(np.concatenate([base, extra]), len(unknown), user is not None or bool(stored))

    def dataset_events(self, user_id: str) -> list[tuple[str, float]]:
        """(item id, timestamp) of a user's events in the dataset, oldest first; empty for unknown users."""
        user = self.dataset.user_index.get(user_id)
        if user is None:
            return []
        lo, hi = self.dataset.offsets[user], self.dataset.offsets[user + 1]
        items, times = self.dataset.items[lo:hi].tolist(), self.dataset.timestamps[lo:hi].tolist()
        return [(self.item_ids[i], float(t)) for i, t in zip(items, times, strict=True)]

    # -- recommendations --------------------------------------------------------------------------------

    def recommend(
        self,
        history: np.ndarray,
        k: int,
        exclude_seen: bool,
        explain: bool = False,
        exclude: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ) -> list[Ranked]:
        """Top-k items after a history of item indices; the same list as `Recommender.recommend_history`."""
        window = history[-self.model.max_len :]
        tensor = torch.as_tensor(window, dtype=torch.long)[None]
        lengths = torch.tensor([len(window)])
        with torch.inference_mode():
            if self.index is None:
                items, scores = None, self.model.score_all(tensor, lengths)[0]
            else:
                items, scores = self._approximate(tensor, history, k, exclude_seen, exclude, candidates)
            blocked = [torch.as_tensor(exclude, dtype=torch.long)] if exclude is not None and len(exclude) else []
            if exclude_seen and len(history):
                blocked.append(torch.as_tensor(history, dtype=torch.long))
            if items is None:
                for block in blocked:
                    scores[block] = float("-inf")
                if candidates is not None:
                    keep = torch.full_like(scores, float("-inf"))
                    chosen = torch.as_tensor(candidates, dtype=torch.long)
                    keep[chosen] = scores[chosen]
                    scores = keep
            elif blocked:
                scores[torch.isin(items, torch.cat(blocked))] = float("-inf")
            k = min(k, int(torch.isfinite(scores).sum()))
            top = torch.topk(scores, k)
            chosen = top.indices if items is None else items[top.indices]
            because = self._explain(tensor, lengths, chosen) if explain else None
        return [
            Ranked(int(item), float(score), because[j] if because is not None else None)
            for j, (item, score) in enumerate(zip(chosen.tolist(), top.values.tolist(), strict=True))
        ]

    def _approximate(
        self,
        tensor: Tensor,
        history: np.ndarray,
        k: int,
        exclude_seen: bool,
        exclude: np.ndarray | None,
        candidates: np.ndarray | None,
    ) -> tuple[Tensor, Tensor]:
        """(items, exact scores) of FAISS candidates (or the given candidates) for a dot-product model."""
        query = self.model.hidden(tensor)[:, -1]
        if candidates is None:
            skip = (len(exclude) if exclude is not None else 0) + (len(set(history.tolist())) if exclude_seen else 0)
            _, ids = self.index.search(query.numpy(), min(self.n_items, k + skip))
            found = ids[0][ids[0] > 0]
            if not exclude_seen and hasattr(self.model, "seen_weight"):
                found = np.concatenate([found, history])  # seen items get a bias FAISS does not know about
            candidates = np.unique(found)
        items = torch.as_tensor(candidates, dtype=torch.long)
        scores = query[0] @ self._table[items].T
        if hasattr(self.model, "seen_weight"):
            scores = scores + self.model.seen_weight * torch.isin(items, tensor[0])
        return items, scores

    def _explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> list[list[PastEvent]]:
        """For each item, the past events that most raise its own score (the model's explain()), with titles."""
        weights = self.model.explain(history, lengths, items[None])[0]
        return [
            [PastEvent(self.item_ids[item], self.title(item), weight) for item, weight in events]
            for events in strongest_events(weights, history[0])
        ]

    def popular(self, k: int, exclude: np.ndarray | None = None, candidates: np.ndarray | None = None) -> list[Ranked]:
        """The most frequent items of the training data (the fallback without a usable history)."""
        order = self._popularity
        if candidates is not None:
            order = order[np.isin(order, candidates)]
        if exclude is not None and len(exclude):
            order = order[~np.isin(order, exclude)]
        return [Ranked(int(i), float(self._pop_scores[i])) for i in order[:k]]

    # -- item embeddings --------------------------------------------------------------------------------

    @cached_property
    def _table(self) -> Tensor:
        """The output item table `[n_items + 1, d]` (Unsupported for models without one)."""
        try:
            with torch.inference_mode():
                return self.model.output_embeddings().detach()
        except TypeError:
            raise Unsupported(f"model {self.model_name} has no item embeddings to compare items by.") from None

    @cached_property
    def _unit_table(self) -> np.ndarray:
        return normalised(self._table.numpy().astype(np.float32))

    @cached_property
    def _cosine_index(self) -> InnerProductIndex:
        return InnerProductIndex(self._unit_table)

    def similar(self, item: int, k: int) -> list[Ranked]:
        """The k items most similar to `item` by cosine over the output item embeddings."""
        unit = self._unit_table
        if self.n_items > self.exact_limit:
            scores, ids = self._cosine_index.search(unit[item][None], k + 1)
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i not in (0, item)]
            return [Ranked(i, s) for i, s in pairs[:k]]
        sims = unit @ unit[item]
        sims[[0, item]] = -np.inf
        k = min(k, self.n_items - 1)
        top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-sims[top], kind="stable")]
        return [Ranked(int(i), float(sims[i])) for i in top]

    # -- items added through the service (lmrec) --------------------------------------------------------

    def _with_items(self, model: SequentialRecommender, items: Sequence[StoredItem]) -> SequentialRecommender:
        """A copy of an lmrec model whose text table also holds these items (new ones appended)."""
        if not (model.uses_item_text and hasattr(model, "text_emb")):
            raise Unsupported(
                f"model {model.name} scores items by learned ID embeddings only, so it cannot score new items; "
                "serve an lmrec model (lmrec train --model lmrec) to add items by their text."
            )
        from lmrec.text.table import text_table

        for item in items:
            if item.item_id not in self.item_index:
                self.item_index[item.item_id] = len(self.item_ids)
                self.item_ids.append(item.item_id)
            if item.title:
                self._added_titles[self.item_index[item.item_id]] = item.title
            elif self.item_index[item.item_id] > self.dataset.n_items:
                self._added_titles[self.item_index[item.item_id]] = item.text[:80]
        vectors, _ = text_table(model.config, [None, *(i.text for i in items)], ["", *(i.item_id for i in items)])
        try:
            return model.with_items(self.n_items, [self.item_index[i.item_id] for i in items], vectors[1:])
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
