"""The record a training keeps of itself, shared by the sequence trainer, pre-training and the classifier.

Per check (an epoch, or the classifier's validation steps): a history row for metrics.json, TensorBoard
scalars (`train/loss`, `valid/<metric>`) and one console line through `logging`, such as
`epoch 12  loss 5.4321  valid ndcg@10 0.1053  best 0.1061 (epoch 9)`; at the end, why training stopped,
in the same words everywhere. Logging only: nothing here draws a random number or changes a value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


def epoch_limit(epochs: int) -> str:
    """The stop reason of a training that ran all its epochs."""
    return f"the epoch limit ({epochs})"


def early_stopping(patience: int, metric: str) -> str:
    """The stop reason of a training whose validation metric stopped improving."""
    return f"early stopping ({patience} epochs without a better {metric})"


def time_budget(seconds: float, detail: str = "") -> str:
    """The stop reason of a training that used its time budget (`detail` says more, e.g. the epoch length)."""
    return f"the time budget ({seconds:g} s{'; ' + detail if detail else ''})"


@dataclass
class TrainingLog:
    """History rows, TensorBoard scalars and console lines of one training.

    Scalars go to TensorBoard while `writing` is open, and are kept until then otherwise: pre-training
    and the classifier write their run folder only once done, so they `save` them at the end (with the
    time each was recorded). `offset` turns a check's number into the one shown: epochs count from 0 in
    metrics.json and TensorBoard, from 1 on the console; the classifier's steps count from 1 everywhere.
    """

    metric: str  # the validation metric the console line follows, e.g. "ndcg@10"
    logger: logging.Logger  # the training module's own, so that each line says what trains
    unit: str = "epoch"
    offset: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    _pending: list[tuple[str, float, int, float]] = field(default_factory=list, init=False, repr=False)
    _writer: SummaryWriter | None = field(default=None, init=False, repr=False)

    @contextmanager
    def writing(self, logs_dir: Path) -> Iterator[None]:
        """Write TensorBoard scalars into `logs_dir` during the block: those kept so far, then each as it comes."""
        self._writer = SummaryWriter(str(logs_dir))
        try:
            for tag, value, step, walltime in self._pending:
                self._writer.add_scalar(tag, value, step, walltime=walltime)
            self._pending.clear()
            yield
        finally:
            self._writer.close()
            self._writer = None

    def save(self, logs_dir: Path) -> None:
        """Write the scalars kept so far into `logs_dir` (a training that writes its run folder once done)."""
        with self.writing(logs_dir):
            pass

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar, written now or kept for `writing` / `save`."""
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)
        else:
            self._pending.append((tag, value, step, time.time()))

    def record(
        self,
        step: int,
        loss: float,
        valid: dict[str, float],
        best: tuple[float, int] | None = None,
        **extra: float,
    ) -> None:
        """One check: its history row, its scalars and its console line; `best` is (best score, its step) so far."""
        self.history.append({self.unit: step, "loss": loss, **extra, **valid})
        self.scalar("train/loss", loss, step)
        for name, value in valid.items():
            self.scalar(f"valid/{name}", value, step)
        self.logger.info("%s", self.line(step, loss, valid, best))

    def line(self, step: int, loss: float, valid: dict[str, float], best: tuple[float, int] | None) -> str:
        """The console line of a check, e.g. `epoch 12  loss 5.4321  valid ndcg@10 0.1053  best 0.1061 (epoch 9)`."""
        parts = [f"{self.unit} {step + self.offset}", f"loss {loss:.4f}"]
        if self.metric in valid:
            parts.append(f"valid {self.metric} {valid[self.metric]:.4f}")
        if best is not None:
            parts.append(f"best {best[0]:.4f} ({self.unit} {best[1] + self.offset})")
        return "  ".join(parts)

    def stopped(self, reason: str) -> None:
        """Say why training stopped (see `epoch_limit`, `early_stopping`, `time_budget`)."""
        self.logger.info("stopped by %s", reason)
