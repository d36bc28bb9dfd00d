"""Data-parallel training (DistributedDataParallel) across the processes that `torchrun` starts.

A process is part of a distributed training when torchrun's environment (WORLD_SIZE > 1, RANK, LOCAL_RANK)
says so; `session` then joins the process group (NCCL when every local rank has a GPU of its own, gloo on
CPU otherwise) and leaves it at the end, also on error. Outside torchrun nothing here does anything, and
the trainer's single-process path is untouched.

Each epoch every rank draws the same shuffled permutation of the training windows (same seed, same
generator) and cuts it into the same global batches of `train.batch_size` windows as one process would;
rank r trains on every world_size-th window of each global batch (`shard_batches`), so the ranks' shards
are disjoint and together cover the epoch. Each rank's mean loss is weighted by its share of the batch's
targets (times world_size, since DDP averages gradients), so the averaged gradient is the gradient of the
global batch's mean loss, as in one process. Rank 0 validates, writes checkpoints, TensorBoard and
metrics.json; its decisions (stop or go on) are broadcast so that every rank runs the same epochs.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from lmrec.errors import ConfigError, Interrupted
from lmrec.models.base import SequentialRecommender
from lmrec.training.windows import WindowSet

T = TypeVar("T")
CPU = torch.device("cpu")
P = ParamSpec("P")


@dataclass(frozen=True)
class Group:
    """This process's place in a training: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    device: torch.device = CPU

    @property
    def active(self) -> bool:
        """Whether several processes train together (a process group of more than one)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this process validates and writes the run (rank 0, or the only process)."""
        return self.rank == 0


SINGLE = Group()


def launched() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def main_process() -> bool:
    """Whether this process is rank 0 of torchrun's processes, or runs alone (from the environment, so it
    holds before and after the process group exists)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def current() -> Group:
    """The group this process trains in: SINGLE unless a process group of several is initialised."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return SINGLE
    backend = str(dist.get_backend())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    return Group(dist.get_rank(), dist.get_world_size(), local, backend, device)


def choose_backend(local_world_size: int) -> str:
    """NCCL when every process of this node has a GPU of its own, else gloo (on CPU)."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size and dist.is_nccl_available():
        return "nccl"
    return "gloo"


@contextmanager
def session() -> Iterator[Group]:
    """Join torchrun's process group for the block (and leave it after, also on error); a no-op otherwise.

    A process group initialised by the caller is used as it is and left to the caller to destroy.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start distributed training with "
            "`torchrun --nproc_per_node N -m lmrec train ...` or `lmrec train ... --nproc N`."
        )
    backend = choose_backend(int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def in_session(function: Callable[P, T]) -> Callable[P, T]:
    """Run `function` inside `session()`: a training entry point that works alone and under torchrun."""

    @wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with session():
            return function(*args, **kwargs)

    return run


def broadcast(value: T, group: Group) -> T:
    """Rank 0's `value` on every rank (any picklable object); the value itself in a single process."""
    if not group.active:
        return value
    box = [value if group.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(group: Group) -> None:
    """Wait until every rank reaches this point (nothing in a single process)."""
    if group.active:
        dist.barrier()


def all_sum(values: list[float], group: Group) -> list[float]:
    """The sums over ranks of a few numbers (the numbers themselves in a single process)."""
    if not group.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=group.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def refuse_untrainable(model: SequentialRecommender | type[SequentialRecommender]) -> None:
    """Refuse a model without gradient training (pop, itemknn) under several processes: nothing to share."""
    if not model.trainable:
        raise ConfigError(
            f"{model.name} is fitted from the training events' statistics, not trained by gradient descent, so "
            "distributed training has nothing to share out; train it in one process (drop --nproc / torchrun)."
        )


def refuse_distributed(what: str) -> None:
    """Refuse a training that has no distributed form (e.g. the behaviour classifier) when torchrun started
    several processes, instead of letting each of them train and write the same folder."""
    if launched():
        raise ConfigError(
            f"{what} trains in one process only; distributed training (torchrun, `lmrec train --nproc N`) is for "
            "the sequence models of `lmrec train` (the classifier is out of its scope). Run it without torchrun."
        )


class _Loss(torch.nn.Module):
    """The model's training loss as a module's forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)


def wrap(model: SequentialRecommender, group: Group) -> torch.nn.Module:
    """The model's loss in DistributedDataParallel (on the group's device); the model's own weights stay
    those of `model`, which validation and checkpoints use as in one process.

    Buffers are not broadcast at each step: the models' buffers (item text vectors, counts) are fixed and
    identical on every rank, and the text vectors can be large.
    """
    refuse_untrainable(model)
    model.to(group.device)
    device_ids = [group.device.index] if group.device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers (deprecated) to forward_sync_buffers; both keep buffers apart per step
    renamed = "forward_sync_buffers" in inspect.signature(ddp).parameters
    sync = "forward_sync_buffers" if renamed else "broadcast_buffers"
    return ddp(_Loss(model), device_ids=device_ids, **{sync: False})


def shard_batches(
    windows: WindowSet, batch_size: int, rng: np.random.Generator, rank: int, world_size: int
) -> Iterator[tuple[np.ndarray, float]]:
    """Rank `rank`'s windows of each global batch of the epoch, and their share of that batch's targets.

    The permutation is drawn from `rng` exactly as `WindowSet.batches` draws it, so the global batches are
    those of one process; the rank takes every `world_size`-th window of each, starting at its rank. A rank
    left without a window in a short last batch gets the batch's first window with share 0 (it still takes
    part in the gradient's all-reduce, contributing nothing), so every rank runs the same number of steps.
    """
    order = rng.permutation(len(windows))
    targets = windows.targets_per_window
    for lo in range(0, len(order), batch_size):
        batch = order[lo : lo + batch_size]
        mine = batch[rank::world_size]
        if not len(mine):
            yield batch[:1], 0.0
            continue
        yield mine, float(targets[mine].sum() / max(1, targets[batch].sum()))


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m lmrec ARGV` in `nproc` processes under torchrun on this machine; its exit code.

    A signal that stops this process is passed on to torchrun, which stops its workers (rank 0 records
    what the run kept), and waited for.
    """
    if launched():
        raise ConfigError("--nproc starts torchrun itself; under torchrun, leave --nproc out.")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "lmrec",
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except BaseException as exc:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if isinstance(exc, Interrupted):
            exc.message = f"stopped the {nproc} training processes; process 0 said above what the run kept."
        raise
