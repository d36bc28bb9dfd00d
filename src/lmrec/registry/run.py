"""A run directory: everything one training run produces, and the loading of its model.

Layout: `config.yaml`, `run.json` (dataset path and fingerprint, model name, catalogue size, state),
`model/model.pt` (best weights), `checkpoints/last.pt` (resume state), `logs/` (TensorBoard),
`metrics.json`, `ranks/<split>.npz` (per-example ranks for paired tests), `.lock` (held while training).

Checkpoints are read with `torch.load(weights_only=True)`: a file holding anything but tensors and plain
values (a pickle payload that would run code) is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import torch

from lmrec.atomic import atomic_write, atomic_write_json, atomic_write_text, read_json_object
from lmrec.config import RunConfig, dump_config, load_yaml, validate_config
from lmrec.errors import RunError
from lmrec.locks import file_lock, is_locked
from lmrec.models.base import SequentialRecommender, build_model
from lmrec.version import __version__

State = Literal["running", "interrupted", "failed", "finished", "killed"]
LOCK_NAME = ".lock"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint dict of tensors and plain values; a missing, corrupt or code-carrying file is a RunError."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; train the run first with `lmrec train`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the weights-only unpickler met a reference to a class or function
            raise RunError(
                f"checkpoint {path} holds objects other than tensors and plain values, which could run code; "
                "it was refused unread. Use only checkpoints written by lmrec, or retrain the run."
            ) from None
        raise RunError(
            f"checkpoint {path} is corrupt (not a checkpoint); retrain the run or restore the file."
        ) from None
    except Exception as exc:
        raise RunError(
            f"checkpoint {path} is corrupt or incompatible ({exc.__class__.__name__}); "
            "retrain the run or restore the file."
        ) from None
    if not isinstance(state, dict):
        raise RunError(f"checkpoint {path} holds a {type(state).__name__}, not an lmrec checkpoint; retrain the run.")
    return state


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a run's file, with one sentence when it is unreadable."""
    return read_json_object(path, RunError, "restore it or retrain the run", what)


class RunDir:
    """Paths and (de)serialisation for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.yaml")
    info_file = property(lambda self: self.path / "run.json")
    model_file = property(lambda self: self.path / "model" / "model.pt")
    last_file = property(lambda self: self.path / "checkpoints" / "last.pt")
    logs_dir = property(lambda self: self.path / "logs")
    metrics_file = property(lambda self: self.path / "metrics.json")

    def ranks_file(self, split: str) -> Path:
        """Per-example ranks of a split, saved for paired tests."""
        return self.path / "ranks" / f"{split}.npz"

    def check_new(self, overwrite: bool, resume: bool) -> None:
        """Refuse to clobber an existing run unless asked to overwrite or resume (checked before any work)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run folder; choose another --out.")
        if resume:
            if not self.last_file.is_file():
                raise RunError(f"cannot resume: {self.path} has no checkpoint yet; start it without --resume.")
        elif self.path.exists() and any(p.name != LOCK_NAME for p in self.path.iterdir()) and not overwrite:
            raise RunError(
                f"run directory {self.path} already exists; pass --overwrite to replace it or --resume to continue it."
            )

    def lock(self) -> AbstractContextManager[None]:
        """Hold the run's lock for the block, so that two trainings never write one run folder at once."""
        return file_lock(self.path / LOCK_NAME, wait=0, busy=self._busy)

    def _busy(self) -> RunError:
        return RunError(
            f"run directory {self.path} is in use by another lmrec process (a training of it is running); "
            "wait for it to finish or stop it first."
        )

    def create(self, overwrite: bool, resume: bool) -> None:
        """Empty the (locked) directory for a new run, or keep it for a resumed one."""
        self.check_new(overwrite, resume)
        if not resume:
            for child in self.path.iterdir():
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def discard(self) -> None:
        """Remove a run that kept nothing worth resuming (it stays locked until the caller releases it)."""
        for child in self.path.iterdir():
            if child.name != LOCK_NAME:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        if not any(self.path.iterdir()):
            self.path.rmdir()

    def write_setup(self, config: RunConfig, info: dict[str, Any]) -> None:
        """Record the config and what the run was trained on; the run is now running."""
        atomic_write_text(self.config_file, dump_config(config))
        record = {**info, "lmrec_version": __version__, "state": "running", "pid": os.getpid()}
        atomic_write_json(self.info_file, record)

    def update_info(self, **fields: Any) -> None:
        """Rewrite run.json with some fields changed (state, resumes)."""
        atomic_write_json(self.info_file, {**self.info(), **fields})

    def set_state(self, state: State, **fields: Any) -> None:
        """Record where training stands: running, interrupted, failed or finished."""
        self.update_info(state=state, pid=os.getpid(), **fields)

    def info(self) -> dict[str, Any]:
        """The run's record of its dataset and model."""
        if not self.info_file.is_file():
            raise RunError(f"{self.path} is not an lmrec run directory (no run.json); train one with `lmrec train`.")
        return read_json(self.info_file, "the run's record")

    def state(self) -> State:
        """Where training stands; a run still marked running whose lock is free was killed mid-training.

        The lock is probed before run.json is read, so a run that finishes in between reads as finished.
        """
        locked = is_locked(self.path / LOCK_NAME) if self.path.is_dir() else False
        info = self.info()
        state = info.get("state") or ("finished" if self.metrics_file.is_file() else "killed")
        return "killed" if state == "running" and not locked else state

    def unfinished_note(self) -> str | None:
        """One line saying that the run did not finish training, or None when it did."""
        state = self.state()
        if state == "finished":
            return None
        epochs = int(self.info().get("epochs_done", 0))
        how = {
            "running": "is still training",
            "interrupted": f"was interrupted after {epochs} epoch{'s' if epochs != 1 else ''}",
            "failed": "failed during training",
            "killed": "was killed during training",
        }[state]
        return f"run {self.path} {how}, so its model is the best checkpoint so far"

    def config(self) -> RunConfig:
        """The run's validated config."""
        return validate_config(load_yaml(self.config_file))

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Atomically save a checkpoint dict."""
        atomic_write(path, lambda handle: torch.save(state, handle))

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint of this run (see `load_checkpoint`)."""
        return load_checkpoint(path)

    def load_model(self, fingerprint: str | None = None) -> SequentialRecommender:
        """The best model of the run, checked against the dataset it will be used with."""
        info = self.info()
        if fingerprint is not None and info.get("fingerprint") != fingerprint:
            raise RunError(
                f"run {self.path} was trained on another dataset preparation ({info.get('dataset')}); "
                "its item ids do not match this one."
            )
        state = self.load_checkpoint(self.model_file)
        model = build_model(state["model"], int(state["n_items"]), state["params"])
        self._load_weights(model, state["state_dict"], strict=True)
        return model

    def load_model_for(self, n_items: int) -> SequentialRecommender:
        """The run's model on another catalogue of `n_items` items: only an inductive model transfers, its
        catalogue entries left for the caller to fill (`set_item_text`)."""
        state = self.load_checkpoint(self.model_file)
        model = build_model(state["model"], n_items, state["params"])
        if not model.inductive:
            raise RunError(
                f"run {self.path} was trained on another dataset preparation ({self.info().get('dataset')}): its "
                f"{state['model']} model knows that catalogue's items by id, so it cannot score this one; only an "
                "inductive lmrec model (lmrec pretrain, or train --inductive) scores another catalogue."
            )
        skip = set(model.catalogue_keys())
        self._load_weights(model, {k: v for k, v in state["state_dict"].items() if k not in skip}, strict=False)
        return model

    def _load_weights(self, model: SequentialRecommender, weights: dict[str, Any], strict: bool) -> None:
        """Load `weights` (every one but the catalogue's when not `strict`), refusing a checkpoint that does not fit."""
        try:
            missing, unexpected = model.load_state_dict(weights, strict=strict)
        except RuntimeError as exc:
            # torch's message is a header line ("Error(s) in loading state_dict for …:") and one line per error.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[1] if len(lines) > 1 else lines[0] if lines else "unreadable weights"
            raise RunError(f"checkpoint {self.model_file} does not fit model {model.name}: {reason}") from None
        missing = [key for key in missing if key not in model.catalogue_keys()]
        if missing or unexpected:
            raise RunError(f"checkpoint {self.model_file} does not fit model {model.name} (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}).")  # fmt: skip
        model.eval()

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Atomically write metrics.json."""
        atomic_write_json(self.metrics_file, metrics)

    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json."""
        if not self.metrics_file.is_file():
            raise RunError(f"{self.path} has no metrics.json; the run did not finish training.")
        return read_json(self.metrics_file, "the run's metrics")
