"""Full-ranking evaluation of a `SequentialRecommender` on one split of a `PreparedDataset`.

Each target is ranked among all real items (or, when asked, among sampled negatives) from the scores the
model gives after seeing its history: the events before it, or for a given split (RecBole benchmark files)
the example's own history as listed. Ties are broken by item id (lower id ranks higher), so a model that
scores everything equally gets the same, reproducible ranks everywhere. Scores are compared as float32.
Metrics are means over the split's targets (examples), whatever the number of targets per user.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lmrec.data.dataset import TRAIN, PreparedDataset
from lmrec.errors import DataError, RunError
from lmrec.evaluation.metrics import coverage_at_k, popularity_at_k, ranking_metric, ranking_metrics
from lmrec.models.base import SequentialRecommender

SAMPLED_PREFIX = "sampled_"
DEFAULT_KS = (5, 10, 20)
RESULT_FORMAT_VERSION = 1
_MASKED = torch.iinfo(torch.int64).min  # below every real item's key: never ranked above anything
BATCH_CELLS = 1 << 21  # scores per evaluation batch at most (8 MB of float32, 16 MB of int64 keys)

Sampling = Literal["uniform", "popularity"]


@dataclass(eq=False)
class EvalResult:
    """Per-example ranks and top-K lists of one evaluation, with the metric means.

    `ranks[i]` is the 0-based rank of target `items[i]` of user `users[i]` whose history has `positions[i]`
    events; `topk[i]` are the ids of the full-ranking top-max(ks) items (0 where fewer were rankable).
    """

    split: str
    ks: tuple[int, ...]
    users: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    ranks: np.ndarray
    topk: np.ndarray
    metrics: dict[str, float]
    mask_history: bool = True
    sampled_negatives: int | None = None
    fingerprint: str = ""
    method: str = ""  # the dataset's split method ("loo", "temporal", "cold-items", "given"); "" when unknown

    def __len__(self) -> int:
        return int(self.ranks.shape[0])

    def protocol_info(self) -> dict:
        """How the metrics were computed, for metrics.json: targets, ranking, masking, averaging, intervals."""
        users = int(np.unique(self.users).shape[0])
        return {
            "split": self.split,
            "targets": "given examples" if self.method == "given" else self.method or "unknown",
            "examples": len(self),
            "users": users,
            "ranking": f"{self.sampled_negatives} sampled negatives" if self.sampled_negatives else "all items",
            "mask_history": self.mask_history,
            "averaged_over": "examples",
            "intervals": "bootstrap over users (clustered)" if users < len(self) else "bootstrap over examples",
        }

    @property
    def prefix(self) -> str:
        """The prefix of this result's ranking metric names: "sampled_" for sampled negatives, else ""."""
        return SAMPLED_PREFIX if self.sampled_negatives else ""

    @property
    def protocol(self) -> str:
        """A short description of how the ranks were computed, for messages and tables."""
        ranked = f"{self.sampled_negatives} sampled negatives" if self.sampled_negatives else "full ranking"
        return f"{self.split}, {ranked}, history {'masked' if self.mask_history else 'not masked'}"

    def per_example(self, metric: str) -> np.ndarray:
        """Per-example values of a ranking metric named as in `metrics` (e.g. "ndcg@10")."""
        prefix = self.prefix
        if not metric.startswith(prefix) or (not prefix and metric.startswith(SAMPLED_PREFIX)):
            raise ValueError(
                f"{metric!r} does not match this result's protocol ({self.protocol}); "
                f"its metrics are named like {prefix}ndcg@10"
            )
        return ranking_metric(metric[len(prefix) :], self.ranks)

    def save(self, path: str | Path) -> Path:
        """Write the per-example ranks and metadata to a .npz file atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": RESULT_FORMAT_VERSION,
            "split": self.split,
            "ks": list(self.ks),
            "metrics": self.metrics,
            "mask_history": self.mask_history,
            "sampled_negatives": self.sampled_negatives,
            "fingerprint": self.fingerprint,
            "method": self.method,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                users=self.users,
                items=self.items,
                positions=self.positions,
                ranks=self.ranks,
                topk=self.topk,
                meta=np.array(json.dumps(meta)),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        """Read a result written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"no saved evaluation at {path}; write one with EvalResult.save.")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format_version") != RESULT_FORMAT_VERSION:
                raise RunError(f"{path} has evaluation format {meta.get('format_version')}, expected 1.")
            arrays = {name: data[name] for name in ("users", "items", "positions", "ranks", "topk")}
        return cls(
            split=meta["split"],
            ks=tuple(meta["ks"]),
            metrics=meta["metrics"],
            mask_history=meta["mask_history"],
            sampled_negatives=meta["sampled_negatives"],
            fingerprint=meta["fingerprint"],
            method=meta.get("method", ""),
            **arrays,
        )


def ranking_keys(scores: Tensor) -> Tensor:
    """int64 keys `[B, C]` ordering columns by float32 score descending, then by id ascending.

    The float's bits are mapped to an order-preserving integer in the high 32 bits and `C-1-id` fills
    the low bits, so one comparison (`key > key_target`) counts the items ranked above a target and
    `topk` on the keys gives exact, id-tie-broken top-K lists.
    """
    values = scores.float() + 0.0  # turns -0.0 into +0.0 so equal scores get equal keys
    bits = values.view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()
    tiebreak = torch.arange(scores.shape[1] - 1, -1, -1, device=scores.device)
    return ordered * (1 << 32) + tiebreak


def _check_ks(ks: Iterable[int], n_items: int) -> tuple[int, ...]:
    """Sorted unique cut-offs, each a positive integer no larger than the catalogue."""
    cutoffs = tuple(sorted({int(k) for k in ks}))
    if not cutoffs or cutoffs[0] < 1 or cutoffs[-1] > n_items:
        raise ValueError(f"cut-offs K must be between 1 and the {n_items} items, got {list(ks)}")
    return cutoffs


def _device(model: SequentialRecommender) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without tensors)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class Evaluator:
    """Evaluates models on one split of a dataset; build once, call with each model (e.g. every epoch).

    `mask_history` removes every item of the target's history from the ranking (the target itself is never
    removed); None takes the dataset's protocol default (`PreparedDataset.default_mask_history`: masked
    for splits of the users' sequences, not masked for given examples). `sampled_negatives` ranks the
    target among that many negatives drawn once, without replacement, uniformly or by training popularity
    from a generator seeded with `seed`, excluding the target and the masked items; its metric names start
    with "sampled_". Popularity@K is the mean number of training-split events of the recommended items.
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        split: str = "test",
        ks: Iterable[int] = DEFAULT_KS,
        *,
        mask_history: bool | None = None,
        batch_size: int = 256,
        sampled_negatives: int | None = None,
        sampling: Sampling = "uniform",
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")
        self.dataset = dataset
        self.split = split
        self.ks = _check_ks(ks, dataset.n_items)
        self.mask_history = dataset.default_mask_history if mask_history is None else mask_history
        self.batch_size = batch_size
        self.targets = dataset.targets(split)
        if not len(self.targets):
            raise DataError(f"the {split} split of {dataset.name} has no targets to evaluate.")
        self.item_counts = np.bincount(dataset.items[dataset.split == TRAIN], minlength=dataset.n_items + 1)
        self.sampled_negatives = sampled_negatives
        self.negatives: np.ndarray | None = None
        if sampled_negatives is not None:
            if sampled_negatives < 1:
                raise ValueError(f"sampled_negatives must be positive, got {sampled_negatives}")
            self.negatives = self._sample_negatives(sampled_negatives, sampling, np.random.default_rng(seed))

    def _batches(self) -> list[slice]:
        """Consecutive slices of at most `batch_size` targets, fewer when the catalogue is large: a batch's
        scores and keys stay within `BATCH_CELLS` cells, so they are reused from the heap instead of being
        mapped afresh (and zeroed by the kernel) for every batch."""
        n = len(self.targets)
        step = max(1, min(self.batch_size, BATCH_CELLS // (self.dataset.n_items + 1)))
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def histories(self, rows: slice, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-aligned, zero-padded `[b, width]` histories of the targets in `rows`, and their lengths.

        `width` is `max_len`, or the longest history of the batch when that is shorter (never all padding).
        """
        pos, pool = self.targets.pos[rows], self.targets.pool
        steps = np.arange(-max(1, min(max_len, int(pos.max(initial=1)))), 0)
        index = (self.targets.start[rows] + pos)[:, None] + steps
        present = steps >= -pos[:, None]
        return np.where(present, pool[np.maximum(index, 0)], 0), np.minimum(pos, max_len)

    def seen(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """(row within the batch, item) of every history event of the targets in `rows`, except the target."""
        pos = self.targets.pos[rows]
        row = np.repeat(np.arange(pos.shape[0]), pos)
        first = np.repeat(self.targets.start[rows] - (np.cumsum(pos) - pos), pos)
        items = self.targets.pool[first + np.arange(row.shape[0])]
        keep = items != self.targets.item[rows][row]
        return row[keep], items[keep]

    def _sample_negatives(self, n: int, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
        """`[N, n]` sorted negative ids per target, by Gumbel top-k (sampling without replacement)."""
        weights = self.item_counts[1:] if sampling == "popularity" else np.ones(self.dataset.n_items)
        with np.errstate(divide="ignore"):
            log_weights = np.log(weights.astype(np.float64))
        negatives = np.empty((len(self.targets), n), dtype=np.int64)
        for rows in self._batches():
            keys = log_weights + rng.gumbel(size=(rows.stop - rows.start, self.dataset.n_items))
            keys[np.arange(keys.shape[0]), self.targets.item[rows] - 1] = -np.inf
            if self.mask_history:
                row, items = self.seen(rows)
                keys[row, items - 1] = -np.inf
            eligible = np.isfinite(keys).sum(axis=1)
            if (eligible < n).any():
                short = rows.start + int(np.argmax(eligible < n))
                raise ValueError(
                    f"cannot sample {n} negatives: target {short} has only {int(eligible.min())} eligible items"
                )
            negatives[rows] = np.sort(np.argpartition(-keys, n - 1, axis=1)[:, :n] + 1, axis=1)
        return negatives

    def _scores(self, model: SequentialRecommender, rows: slice, device: torch.device) -> Tensor:
        """The model's scores `[b, n_items + 1]` of all items for the targets in `rows`, checked."""
        history, lengths = self.histories(rows, model.max_len)
        scores = model.score_all(torch.from_numpy(history).to(device), torch.from_numpy(lengths).to(device))
        expected = (history.shape[0], self.dataset.n_items + 1)
        if tuple(scores.shape) != expected:
            name = type(model).__name__
            raise ValueError(f"{name}.score_all returned shape {tuple(scores.shape)}, expected {expected}")
        if bool(torch.isnan(scores).any()):
            raise ValueError(f"{type(model).__name__}.score_all returned NaN scores")
        return scores

    def _keys(self, model: SequentialRecommender, rows: slice, device: torch.device) -> Tensor:
        """Ranking keys of all items for the targets in `rows`; padding and masked items sink to the end."""
        keys = ranking_keys(self._scores(model, rows, device))
        keys[:, 0] = _MASKED
        if self.mask_history:
            row, items = self.seen(rows)
            keys[torch.from_numpy(row).to(device), torch.from_numpy(items).to(device)] = _MASKED
        return keys

    def __call__(self, model: SequentialRecommender, progress: bool = False) -> EvalResult:
        """Rank every target of the split with `model` (in eval mode, restored afterwards); `progress` shows a bar
        of the batches on stderr."""
        if model.n_items != self.dataset.n_items:
            raise ValueError(f"model scores {model.n_items} items, the dataset has {self.dataset.n_items}")
        device = _device(model)
        n, k_max = len(self.targets), self.ks[-1]
        ranks = np.empty(n, dtype=np.int64)
        topk = np.empty((n, k_max), dtype=np.int64)
        was_training = model.training
        model.eval()
        batches = tqdm(
            self._batches(), desc=f"evaluating {self.split}", unit="batch", disable=not progress, leave=False
        )
        try:
            with torch.inference_mode():
                for rows in batches:
                    keys = self._keys(model, rows, device)
                    target = torch.from_numpy(self.targets.item[rows]).to(device)[:, None]
                    candidates = keys
                    if self.negatives is not None:
                        candidates = keys.gather(1, torch.from_numpy(self.negatives[rows]).to(device))
                    ranks[rows] = (candidates > keys.gather(1, target)).sum(1).cpu().numpy()
                    top_keys, top_ids = keys.topk(k_max, dim=1)
                    topk[rows] = torch.where(top_keys > _MASKED, top_ids, 0).cpu().numpy()
        finally:
            model.train(was_training)
        return EvalResult(
            split=self.split,
            ks=self.ks,
            users=self.targets.user,
            items=self.targets.item,
            positions=self.targets.pos,
            ranks=ranks,
            topk=topk,
            metrics=self._metrics(ranks, topk),
            mask_history=self.mask_history,
            sampled_negatives=self.sampled_negatives,
            fingerprint=self.dataset.fingerprint,
            method=self.dataset.split_method,
        )

    def candidate_scores(self, model: SequentialRecommender, candidates: np.ndarray) -> np.ndarray:
        """`[N, K]` scores the model gives to `candidates[i]` (item ids) of each target of the split, e.g. a
        result's top-K for a second stage to blend with."""
        device = _device(model)
        out = np.empty(candidates.shape, dtype=np.float64)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for rows in self._batches():
                    scores = self._scores(model, rows, device).double().cpu().numpy()
                    out[rows] = np.take_along_axis(scores, candidates[rows], 1)
        finally:
            model.train(was_training)
        return out

    def _metrics(self, ranks: np.ndarray, topk: np.ndarray) -> dict[str, float]:
        """Mean ranking metrics (prefixed when sampled) plus full-ranking coverage and popularity."""
        metrics = ranking_metrics(ranks, self.ks, SAMPLED_PREFIX if self.sampled_negatives else "")
        for k in self.ks:
            metrics[f"coverage@{k}"] = coverage_at_k(topk, self.dataset.n_items, k)
            metrics[f"popularity@{k}"] = popularity_at_k(topk, self.item_counts, k)
            metrics[f"popularity_norm@{k}"] = popularity_at_k(topk, self.item_counts, k, normalise=True)
        return metrics


def evaluate(
    model: SequentialRecommender,
    dataset: PreparedDataset,
    split: str = "test",
    ks: Iterable[int] = DEFAULT_KS,
    *,
    mask_history: bool | None = None,
    batch_size: int = 256,
    sampled_negatives: int | None = None,
    sampling: Sampling = "uniform",
    seed: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Evaluate `model` on `split` of `dataset` once (see `Evaluator` for the options)."""
    evaluator = Evaluator(
        dataset,
        split,
        ks,
        mask_history=mask_history,
        batch_size=batch_size,
        sampled_negatives=sampled_negatives,
        sampling=sampling,
        seed=seed,
    )
    return evaluator(model, progress)
