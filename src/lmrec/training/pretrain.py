"""Pre-training a text-based (inductive) model on one or more source catalogues at once.

Batches from every source dataset are interleaved; each batch is scored against its own catalogue's
text-derived item table. Two objectives, as in UniSRec (Hou et al., KDD 2022): next-item prediction over
the batch's catalogue (the injected objective, full softmax by default) and a sequence–item contrastive
loss between each window's final state and its next item, with the other windows' items as negatives.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from lmrec.config import RunConfig
from lmrec.data.dataset import PreparedDataset
from lmrec.evaluation.evaluator import Evaluator
from lmrec.models.base import Batch, SequentialRecommender
from lmrec.training.distributed import refuse_distributed
from lmrec.training.losses import full_softmax_ce
from lmrec.training.training_log import TrainingLog, early_stopping, epoch_limit, time_budget
from lmrec.training.windows import WindowSet

log = logging.getLogger(__name__)

METRIC = "ndcg@10"  # the validation metric, averaged over the sources, that keeps the best state


@dataclass
class Source:
    """One source catalogue: its data, text table and training windows."""

    dataset: PreparedDataset
    text: Tensor
    windows: WindowSet


def contrastive_loss(hidden: Tensor, targets: Tensor, table: Tensor, temperature: float) -> Tensor:
    """InfoNCE between sequence states and their next items, other rows' items being the negatives."""
    queries = F.normalize(hidden, dim=-1)
    keys = F.normalize(table[targets], dim=-1)
    logits = queries @ keys.T / temperature
    same = targets[None, :] == targets[:, None]
    logits = logits.masked_fill(same & ~torch.eye(len(targets), dtype=torch.bool, device=logits.device), -1e9)
    return F.cross_entropy(logits, torch.arange(len(targets), device=logits.device))


class Pretrainer:
    """Trains an inductive lmrec model on several sources; validation NDCG@10 averaged over sources.

    Its history and TensorBoard scalars are kept in `training_log`; the caller saves the scalars into the
    run folder, which is written only once pre-training is done.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        sources: list[tuple[PreparedDataset, Tensor]],
        config: RunConfig,
        contrastive_weight: float = 0.1,
        temperature: float = 0.07,
        progress: bool = False,
    ) -> None:
        refuse_distributed("pre-training (`lmrec pretrain`)")
        self.model = model
        self.config = config
        self.progress = progress
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.sources = [
            Source(ds, text, WindowSet(ds.items, ds.offsets[:-1], ds.train_lengths, model.max_len))
            for ds, text in sources
        ]
        self.model.objective = full_softmax_ce()
        self.rng = np.random.default_rng(config.seed)
        self.training_log = TrainingLog(METRIC, log)
        self.stopped_by = ""
        self.train_seconds = 0.0

    def _use(self, source: Source) -> None:
        self.model.switch_catalogue(source.text)

    def _step_loss(self, batch: Batch) -> Tensor:
        loss = self.model.loss(batch)
        if self.contrastive_weight:
            inputs, targets = batch.next_item
            last = targets[:, -1] > 0
            if int(last.sum()) > 1:
                hidden = self.model.hidden(inputs[last])[:, -1]
                table = self.model.output_embeddings()
                loss = loss + self.contrastive_weight * contrastive_loss(
                    hidden, targets[last, -1], table, self.temperature
                )
        return loss

    def validate(self) -> dict[str, float]:
        """Validation NDCG@10 of every source (its own catalogue) and their mean."""
        scores = {}
        for source in self.sources:
            self._use(source)
            result = Evaluator(source.dataset, "valid", [10], mask_history=self.config.eval.mask_history)(self.model)
            scores[f"{source.dataset.name}/{METRIC}"] = result.metrics[METRIC]
        scores[METRIC] = float(np.mean(list(scores.values())))
        return scores

    def fit(self) -> dict[str, float]:
        """Epochs of interleaved batches until the budget or patience; returns the best validation scores."""
        cfg = self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_epoch, best_state, bad = -math.inf, -1, None, 0
        best_scores: dict[str, float] = {}
        self.stopped_by = epoch_limit(cfg.epochs)
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            loss = self._epoch(optimizer, epoch)
            scores = self.validate()
            self.train_seconds += time.perf_counter() - started
            improved = scores[METRIC] > best
            if improved:
                best, best_epoch, bad, best_scores = scores[METRIC], epoch, 0, scores
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                bad += 1
            self.training_log.record(epoch, loss, scores, (best, best_epoch), seconds=self.train_seconds)
            if not improved and bad >= cfg.patience:
                self.stopped_by = early_stopping(cfg.patience, METRIC)
                break
            if cfg.max_seconds is not None and self.train_seconds >= cfg.max_seconds:
                self.stopped_by = time_budget(cfg.max_seconds)
                break
        self.training_log.stopped(self.stopped_by)
        if best_state is not None:
            keep = {k: v for k, v in best_state.items() if k not in self.model.catalogue_keys()}
            self.model.load_state_dict(keep, strict=False)
        return best_scores

    def _epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """One pass over every source's windows in a seeded interleaved order; returns the mean batch loss."""
        cfg = self.config.train
        plan = [(i, b) for i, s in enumerate(self.sources) for b in s.windows.batches(cfg.batch_size, self.rng)]
        order = self.rng.permutation(len(plan))
        self.model.train()
        total = 0.0
        bar = tqdm(order, desc=f"pretrain epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress, leave=False)
        for count, index in enumerate(bar, 1):
            source, batch = plan[index]
            self._use(self.sources[source])
            loss = self._step_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
            optimizer.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / count:.4f}")
        return total / max(1, len(order))
