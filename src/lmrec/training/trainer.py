"""The training loop shared by every model: windows, objective, AdamW, schedule, early stopping, resume.

It only talks to models through the `SequentialRecommender` interface; it writes into a `RunDir`.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.config import RunConfig
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, DataError, RunError
from lmrec.evaluation.evaluator import Evaluator
from lmrec.models.base import Batch, SequentialRecommender, build_model
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads
from lmrec.training import distributed
from lmrec.training.losses import make_objective, resolved_loss
from lmrec.training.training_log import TrainingLog, early_stopping, epoch_limit, time_budget
from lmrec.training.windows import WindowSet

log = logging.getLogger(__name__)

ValidationHook = Callable[[int, dict[str, float]], str | None]
"""Called with (epoch, validation metrics) after each validation; a returned reason stops training there."""


@dataclass
class TrainState:
    """What resuming needs besides weights: progress, the best score so far and the patience counter."""

    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = ""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so that two CPU runs with the same seed give the same metrics."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(schedule: str, warmup: int, total: int):
    """Linear warm-up, then constant or cosine decay to zero, as a LambdaLR factor."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Keep every parameter whose name starts with one of `prefixes` out of training (e.g. the Transformer
    after `--init`, to fine-tune only the text adapter); a prefix that names no parameter is an error."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise ConfigError(f"train.freeze: {prefix!r} names no parameter of this model; its modules are {tops}.")
    for name, param in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            param.requires_grad_(False)


class Trainer:
    """Trains one model on one PreparedDataset into one run directory."""

    def __init__(
        self,
        dataset: PreparedDataset,
        config: RunConfig,
        run: RunDir,
        progress: bool = True,
        model: SequentialRecommender | None = None,
        on_validation: ValidationHook | None = None,
    ) -> None:
        self.dataset = dataset
        self.on_validation = on_validation
        self.config = config
        self.run = run
        self.group = distributed.current()  # several processes under torchrun; rank 0 validates and writes
        self.progress = progress and self.group.main
        configure_threads(config.train.threads)
        seed_everything(config.seed)
        self.model = model or build_model(config.model_name, dataset.n_items, config.model_params)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.windows_lengths = self._training_lengths()
        self.windows = WindowSet(
            dataset.items,
            dataset.offsets[:-1],
            self.windows_lengths,
            self.model.max_len,
            config.train.window_stride,
        )
        if self.model.trainable and len(self.windows) == 0:
            raise DataError(
                f"dataset {dataset.path} has no user with two or more training events; it is too small for this split."
            )
        self.state = TrainState()
        self._validator: Evaluator | None = None
        self._epoch_seconds: list[float] = []
        self._prepared = False
        self._hook_stop = ""  # the reason `on_validation` gave to stop, if it did
        self._ddp: torch.nn.Module | None = None  # the model's loss in DistributedDataParallel, under torchrun

    def _training_lengths(self) -> np.ndarray:
        """Training prefix length per user; zero for users left out by `train.user_fraction`."""
        lengths = self.dataset.train_lengths.copy()
        fraction = self.config.train.user_fraction
        if fraction < 1:
            users = np.flatnonzero(lengths > 0)
            keep = np.random.default_rng(self.config.seed).choice(
                users, size=max(1, round(fraction * len(users))), replace=False
            )
            mask = np.zeros_like(lengths, dtype=bool)
            mask[keep] = True
            lengths[~mask] = 0
        return lengths

    def _train_sequences(self) -> list[torch.Tensor]:
        starts, lengths = self.dataset.offsets[:-1], self.windows_lengths
        return [torch.from_numpy(self.dataset.items[s : s + n]) for s, n in zip(starts, lengths, strict=True)]

    def _popularity(self) -> torch.Tensor:
        train = torch.cat(self._train_sequences()).numpy()
        return torch.from_numpy(np.bincount(train, minlength=self.dataset.n_items + 1).astype(np.float64))

    def _setup_optimisation(self) -> None:
        cfg = self.config.train
        if cfg.loss == "auto":
            log.info(
                "loss auto: %s for %s items", resolved_loss("auto", self.dataset.n_items), f"{self.dataset.n_items:,}"
            )
        self.model.objective = make_objective(
            cfg.loss, self.dataset.n_items, cfg.negatives, self._popularity(), self.generator
        )
        freeze_parameters(self.model, cfg.freeze)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        steps_per_epoch = math.ceil(len(self.windows) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.schedule, cfg.warmup_steps, total)
        )

    def _resume_state(self) -> dict[str, Any]:
        return {
            "model_state": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "trainer": self.state.__dict__,
            "rng": {
                "torch": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "numpy": self.rng.bit_generator.state,
                "python": random.getstate(),
            },
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ckpt["model_state"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise RunError(
                f"checkpoint {self.run.last_file} does not fit this model and config "
                f"({exc.__class__.__name__}); start a new run with --overwrite."
            ) from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = TrainState(**ckpt["trainer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["generator"])
        self.rng.bit_generator.state = ckpt["rng"]["numpy"]
        random.setstate(ckpt["rng"]["python"])

    def _save_best(self) -> None:
        self.run.save(
            self.run.model_file,
            {
                "model": self.config.model_name,
                "params": self.config.model_params,
                "n_items": self.dataset.n_items,
                "fingerprint": self.dataset.fingerprint,
                "state_dict": self.model.state_dict(),
            },
        )

    def validate(self) -> dict[str, float]:
        """Full-ranking metrics on the validation split (the evaluator's histories are built once)."""
        if self._validator is None:
            ev = self.config.eval
            self._validator = Evaluator(
                self.dataset, "valid", ev.ks, mask_history=ev.mask_history, batch_size=ev.batch_size
            )
        return self._validator(self.model, progress=self.progress).metrics

    def prepare(self, resume: bool = False) -> None:
        """Fit the model's statistics, set up the optimiser and, to resume, restore the last checkpoint.

        Separate from `fit` so that a caller knows where a resumed run stands (and that its checkpoint
        fits) before it writes anything.
        """
        self.model.fit_statistics(self._train_sequences())
        if self.group.active:
            distributed.refuse_untrainable(self.model)
            self.model.to(self.group.device)  # before the optimiser's state exists or is restored
        self._setup_optimisation()
        if resume and self.run.last_file.is_file():
            self._restore(self.run.load_checkpoint(self.run.last_file))
            log.info("resumed at epoch %d", self.state.epoch)
        if self.group.active:  # every rank restored the same checkpoint; DDP also starts them from rank 0's
            self._ddp = distributed.wrap(self.model, self.group)
        self._prepared = True

    def fit(self, resume: bool = False) -> TrainState:
        """Train until the epoch budget, early stopping, the time budget or a stop asked by `on_validation`
        (e.g. a hyper-parameter search pruning the trial); keep best and last checkpoints."""
        if not self._prepared:
            self.prepare(resume)
        if not self.model.trainable:
            self._save_best()
            self.state.history.append(self.validate())
            self.state.stopped_by = "no training (statistics of the training events)"
            return self.state
        training_log = TrainingLog(self.config.eval.metric, log, history=self.state.history)
        with training_log.writing(self.run.logs_dir) if self.group.main else nullcontext():
            while not (reason := self._decide_stop()):
                self._epoch(training_log)
        self.state.stopped_by = reason
        if self.group.main:
            training_log.stopped(self.state.stopped_by)
            if self.state.best_epoch < 0:
                self._save_best()
        self.state = distributed.broadcast(self.state, self.group)  # rank 0's record on every rank
        return self.state

    def _decide_stop(self) -> str:
        """`_stop_reason`; under torchrun rank 0's (it alone validates and times), so that every rank runs
        the same epochs and none waits for a step the others never take."""
        return distributed.broadcast(self._stop_reason(), self.group)

    def _stop_reason(self) -> str:
        """Why training stops before the next epoch, or "" to go on.

        The time budget is checked between epochs: an epoch that would not fit in what is left of it
        (judged by the slowest epoch so far) is not started. The first epoch always runs, and an epoch
        that validates when earlier ones did not (`eval_every` > 1) can still overshoot by its validation.
        """
        cfg, state = self.config.train, self.state
        if self._hook_stop:
            return self._hook_stop
        if state.epoch >= cfg.epochs:
            return epoch_limit(cfg.epochs)
        if state.bad_epochs >= cfg.patience:
            return early_stopping(cfg.patience, self.config.eval.metric)
        if cfg.max_seconds is not None and state.epoch > 0:
            slowest = max(self._epoch_seconds or [state.train_seconds / state.epoch])
            if state.train_seconds + slowest > cfg.max_seconds:
                return time_budget(cfg.max_seconds, f"another epoch takes about {slowest:.0f} s")
        return ""

    def _epoch(self, training_log: TrainingLog) -> None:
        cfg = self.config.train
        started = time.perf_counter()
        self.model.train()
        total_loss, n_batches, n_targets, shares = 0.0, 0, 0, 0.0
        bar = tqdm(
            self._batches(cfg.batch_size),
            total=math.ceil(len(self.windows) / cfg.batch_size),
            desc=f"epoch {self.state.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
            unit="batch",
        )
        for batch, share in bar:
            if self._ddp is None:
                loss = self.model.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            else:  # DDP averages gradients over ranks: weighted so, they are those of the global batch's mean loss
                loss = self._ddp(batch)
                self.optimizer.zero_grad(set_to_none=True)
                (loss * (share * self.group.world_size)).backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            total_loss += loss.item() * share
            n_batches += 1
            n_targets += int(batch.fresh[:, 1:].sum()) if share else 0
            shares += share  # n_batches in one process; under torchrun this rank's part of them
            rate = n_targets / max(1e-9, time.perf_counter() - started)
            bar.set_postfix(loss=f"{total_loss / max(1e-9, shares):.4f}", targets_per_s=f"{rate:,.0f}")
        if self.group.active:  # the global batches' mean losses (every rank took the same number of steps)
            total_loss, n_targets = distributed.all_sum([total_loss, n_targets], self.group)
        train_loss = total_loss / max(1, n_batches)
        metrics: dict[str, float] = {}
        due = (self.state.epoch + 1) % cfg.eval_every == 0 or self.state.epoch + 1 == cfg.epochs
        if due and self.group.main:
            metrics = self.validate()
        self._epoch_seconds.append(time.perf_counter() - started)
        self.state.train_seconds += self._epoch_seconds[-1]
        if self.group.main:
            self._log_epoch(training_log, train_loss, metrics)
        self.state.epoch += 1
        if self.group.main:
            self.run.save(self.run.last_file, self._resume_state())
        if metrics and self.on_validation is not None:
            self._hook_stop = self.on_validation(self.state.epoch - 1, metrics) or ""

    def _batches(self, batch_size: int) -> Iterator[tuple[Batch, float]]:
        """The epoch's batches, each with its share of the global batch's targets: all of it in one process,
        this rank's windows of each global batch (on its device) under torchrun."""
        group = self.group
        if not group.active:
            return ((batch, 1.0) for batch in self.windows.batches(batch_size, self.rng))
        shards = distributed.shard_batches(self.windows, batch_size, self.rng, group.rank, group.world_size)
        return ((self.windows.batch(idx).to(group.device), share) for idx, share in shards)

    def _log_epoch(self, training_log: TrainingLog, train_loss: float, metrics: dict[str, float]) -> None:
        """Keep the best model and the patience count, then record the epoch (history, TensorBoard, console)."""
        epoch, key = self.state.epoch, self.config.eval.metric
        if key in metrics:
            if metrics[key] > self.state.best:
                self.state.best, self.state.best_epoch, self.state.bad_epochs = metrics[key], epoch, 0
                self._save_best()
            else:
                self.state.bad_epochs += 1
        training_log.scalar("train/lr", self.scheduler.get_last_lr()[0], epoch)
        best = (self.state.best, self.state.best_epoch) if key in metrics else None
        training_log.record(epoch, train_loss, metrics, best, seconds=self.state.train_seconds)


def default_run_path(dataset: Path, model: str) -> Path:
    """Where a run goes when no --out is given: runs/<dataset>-<model>."""
    return Path("runs") / f"{dataset.name}-{model}"
