"""A trained run put to use with original ids: top-K for a user or a history, explanations, re-ranking by a
behaviour classifier, titles and batch export. The CLI, the Python API and the service all load runs here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.atomic import atomic_write
from lmrec.config import EXCLUDE_SEEN_DEFAULT, RunConfig
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import DataError, RunError
from lmrec.models.base import SequentialRecommender
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads
from lmrec.text.table import attach_item_text

log = logging.getLogger(__name__)

EXPLAIN_TOP = 3  # past events listed per recommended item


def load_reranker(run: str | Path, dataset: PreparedDataset):
    """A behaviour-classifier run trained on exactly this prepared dataset (its item ids must match)."""
    from lmrec.inference.classifier import load_run

    classifier = load_run(run)
    if classifier.dataset.fingerprint != dataset.fingerprint:
        raise RunError(
            f"the classifier {run} was trained on another dataset preparation; train it on the same prepared "
            "dataset as the recommender (lmrec classify train DATA ...)."
        )
    return classifier


def classifier_histories(classifier, dataset: PreparedDataset, users: np.ndarray, positions: np.ndarray):
    """Right-aligned item histories and event rows of the classifier's history length before each target."""
    from lmrec.data.labels import history_rows

    rows = history_rows(dataset, users, positions, classifier.config.history)
    return np.where(rows >= 0, dataset.items[np.clip(rows, 0, None)], 0), rows


def _zero_shot_model(run: RunDir, dataset: PreparedDataset, info: dict[str, Any]) -> SequentialRecommender:
    """An inductive run's model on another catalogue: its items encoded by the same text encoder."""
    model = run.load_model_for(dataset.n_items)
    summary = attach_item_text(model, dataset)
    trained_with = info.get("item_text", {}).get("model_id")
    if trained_with and summary["model_id"] != trained_with:
        raise RunError(
            f"run {run.path} was trained on texts encoded by another text encoder (model id {trained_with[:12]}) than "
            f"{summary['encoder']} (model id {summary['model_id'][:12]}); its vectors would not mean the same. Point "
            "--set model.encoder at the encoder it was trained with."
        )
    log.info("scoring %s zero-shot with the inductive model of %s", dataset.path, run.path)
    return model


@dataclass(frozen=True)
class PastEvent:
    """A past event that raised a recommended item's score: its item's original id and title, and by how much."""

    item_id: str
    title: str
    weight: float


def strongest_events(weights: torch.Tensor, history: torch.Tensor) -> list[list[tuple[int, float]]]:
    """For each recommended item (row of `weights` `[K, L]`), the (at most `EXPLAIN_TOP`) events of `history`
    `[L]` with positive weight, most weight first, as (item index, weight)."""
    values, slots = weights.topk(min(EXPLAIN_TOP, weights.shape[1]), dim=1)
    return [
        [(item, weight) for item, weight in zip(items, row, strict=True) if weight > 0 and item > 0]
        for items, row in zip(history[slots].tolist(), values.tolist(), strict=True)
    ]


@dataclass
class Recommendation:
    """One recommended item: original id, score, title, and (optionally) the past events that drove it."""

    item_id: str
    score: float
    title: str
    because: list[PastEvent] | None = None
    probability: float | None = None  # of the behaviour, when a classifier re-ranked the list


def popularity(dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Items with events, most events first (ties by id), and every item's share of the events."""
    counts = np.bincount(dataset.items, minlength=dataset.n_items + 1).astype(np.float64)
    counts[0] = 0
    order = np.argsort(-counts, kind="stable")
    return order[counts[order] > 0], counts / max(counts.sum(), 1.0)


class Recommender:
    """A trained run ready to recommend, speaking original user and item ids."""

    def __init__(self, run: RunDir, dataset: PreparedDataset, model: SequentialRecommender, config: RunConfig):
        self.run = run
        self.dataset = dataset
        self.model = model
        self.config = config

    @classmethod
    def load(cls, path: str | Path, data: str | Path | None = None) -> Recommender:
        """Load a run and the dataset it was trained on, or `data`: the same preparation, or for an inductive
        (text-only) model any prepared dataset with item text, which it scores zero-shot."""
        configure_threads()
        run = RunDir(path)
        info = run.info()
        if data is None and "dataset" not in info:
            raise RunError(f"run {run.path} was pre-trained on {info.get('pretrained_on')}; give the dataset to score "
                           "with --data.")  # fmt: skip
        dataset_path = Path(data) if data is not None else Path(info["dataset"])
        if not dataset_path.exists():
            raise DataError(
                f"the dataset of run {run.path} is gone ({dataset_path}); pass the prepared dataset with --data."
            )
        dataset = PreparedDataset.load(dataset_path)
        note = run.unfinished_note()
        if note:
            log.warning("%s.", note)
        if info.get("fingerprint") == dataset.fingerprint:
            model = run.load_model(dataset.fingerprint)
        else:
            model = _zero_shot_model(run, dataset, info)
        return cls(run, dataset, model, run.config())

    def history(self, user_id: str) -> np.ndarray:
        """The whole known sequence of a user (all splits), as item indices."""
        index = self.dataset.user_index.get(str(user_id))
        if index is None:
            raise DataError(f"unknown user {user_id!r}: not in the dataset of run {self.run.path}.")
        return self.dataset.sequence(index)

    def recommend_history(
        self,
        history: np.ndarray,
        k: int = 10,
        exclude_seen: bool = EXCLUDE_SEEN_DEFAULT,
        explain: bool = False,
        reranker: Any = None,
        rerank_top: int = 20,
        user: int = -1,
        rerank_weight: float | None = None,
    ) -> list[Recommendation]:
        """Top-k items after a sequence of item indices, optionally re-ranked by a behaviour classifier
        (by its probability, or with `rerank_weight` by score + weight x log-odds, as in `evaluate`)."""
        if not len(history):
            return self.popular(k)
        window = history[-self.model.max_len :]
        tensor = torch.as_tensor(window, dtype=torch.long)[None]
        lengths = torch.tensor([len(window)])
        with torch.inference_mode():
            scores = self.model.score_all(tensor, lengths)[0]
            if exclude_seen and len(history):
                scores[torch.as_tensor(history, dtype=torch.long)] = float("-inf")
            finite = int(torch.isfinite(scores).sum())
            top = torch.topk(scores, min(max(k, rerank_top) if reranker else k, finite))
        items, values = top.indices.numpy(), top.values.numpy()
        probabilities = None
        if reranker is not None:
            items, probabilities = self._rerank(reranker, history, items, user, values, rerank_weight)
            values = scores.numpy()[items]
        items, values = items[:k], values[:k]
        because = self._explain(tensor, lengths, torch.as_tensor(items)[None]) if explain else None
        return [
            Recommendation(
                item_id=str(self.dataset.item_ids[int(item)]),
                score=float(score),
                title=self.dataset.item_title(int(item)),
                because=because[j] if because is not None else None,
                probability=float(probabilities[j]) if probabilities is not None else None,
            )
            for j, (item, score) in enumerate(zip(items, values, strict=True))
        ]

    def popular(self, k: int = 10) -> list[Recommendation]:
        """The k items with the most events in the dataset, scored by their share of the events: the answer for
        a user without history, as the service's popularity fallback gives it."""
        order, share = popularity(self.dataset)
        return [
            Recommendation(str(self.dataset.item_ids[int(i)]), float(share[i]), self.dataset.item_title(int(i)))
            for i in order[:k]
        ]

    def _rerank(
        self, reranker: Any, history: np.ndarray, items: np.ndarray, user: int, scores: np.ndarray, weight: float | None
    ):
        from lmrec.inference.classifier import rerank

        size = reranker.config.history
        recent = np.zeros((1, size), dtype=np.int64)
        tail = history[-size:]
        recent[0, size - len(tail) :] = tail
        reordered, probabilities = rerank(
            reranker, np.array([user]), recent, items[None], first_stage=scores[None], weight=weight
        )
        return reordered[0], probabilities[0]

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        exclude_seen: bool = EXCLUDE_SEEN_DEFAULT,
        explain: bool = False,
        reranker: Any = None,
        rerank_top: int = 20,
        rerank_weight: float | None = None,
    ) -> list[Recommendation]:
        """Top-k items for a known user from their whole history (re-ranked when a classifier is given)."""
        return self.recommend_history(
            self.history(user_id),
            k=k,
            exclude_seen=exclude_seen,
            explain=explain,
            reranker=reranker,
            rerank_top=rerank_top,
            user=self.dataset.user_index[str(user_id)],
            rerank_weight=rerank_weight,
        )

    def title_of(self, item_id: str) -> str:
        """The title of an item given its original id."""
        return self.dataset.item_title(self.dataset.item_index[item_id])

    def export_all(
        self,
        out: str | Path,
        k: int = 10,
        exclude_seen: bool = EXCLUDE_SEEN_DEFAULT,
        batch_size: int = 512,
        progress: bool = False,
    ) -> int:
        """Write every user's top-k (user_id, rank, item_id, score) to a Parquet file; returns the row count."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from tqdm.auto import tqdm

        if Path(out).is_dir():
            raise DataError(f"{out} is a folder; give the file to write, such as {Path(out) / 'recs.parquet'}.")
        ds, width = self.dataset, self.model.max_len
        users, ranks, items, scores = [], [], [], []
        starts = range(0, ds.n_users, batch_size)
        for lo in tqdm(starts, desc="recommending", unit="batch", disable=not progress, leave=False):
            batch = np.arange(lo, min(lo + batch_size, ds.n_users))
            ends = ds.offsets[batch + 1]
            cols = ends[:, None] - width + np.arange(width)[None, :]
            history = np.where(cols >= ds.offsets[batch][:, None], ds.items[np.clip(cols, 0, None)], 0)
            tensor = torch.from_numpy(history.astype(np.int64))
            with torch.inference_mode():
                batch_scores = self.model.score_all(tensor, (tensor > 0).sum(1))
                if exclude_seen:
                    for row, user in enumerate(batch):
                        batch_scores[row, torch.from_numpy(ds.sequence(int(user)))] = float("-inf")
                top = torch.topk(batch_scores, min(k, ds.n_items))
            users.append(np.repeat(ds.user_ids[batch], top.indices.shape[1]))
            ranks.append(np.tile(np.arange(1, top.indices.shape[1] + 1), len(batch)))
            items.append(ds.item_ids[top.indices.numpy().ravel()])
            scores.append(top.values.numpy().ravel())
        table = pa.table(
            {
                "user_id": pa.array(np.concatenate(users).tolist(), pa.string()),
                "rank": pa.array(np.concatenate(ranks), pa.int32()),
                "item_id": pa.array(np.concatenate(items).tolist(), pa.string()),
                "score": pa.array(np.concatenate(scores), pa.float32()),
            }
        )
        atomic_write(Path(out), lambda handle: pq.write_table(table, handle))  # never a half-written file
        return table.num_rows

    def _explain(self, history: torch.Tensor, lengths: torch.Tensor, items: torch.Tensor) -> list[list[PastEvent]]:
        """For each of `items` `[1, K]`, the past events that most raise its own score (the model's explain())."""
        weights = self.model.explain(history, lengths, items)[0]
        ds = self.dataset
        return [
            [PastEvent(str(ds.item_ids[item]), ds.item_title(item), weight) for item, weight in events]
            for events in strongest_events(weights, history[0])
        ]
