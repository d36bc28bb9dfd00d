"""A run directory: everything one training run produces, and the loading of its model.

Layout: `config.yaml`, `run.json` (dataset path and fingerprint, model name, catalogue size),
`model/model.pt` (best weights), `checkpoints/last.pt` (resume state), `logs/` (TensorBoard),
`metrics.json`, `ranks/<split>.npz` (per-example ranks for paired tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lmrec import __version__
from lmrec.atomic import atomic_write, atomic_write_json, atomic_write_text
from lmrec.config import RunConfig, dump_config, load_yaml, validate_config
from lmrec.errors import RunError
from lmrec.models.base import SequentialRecommender, build_model


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

    def create(self, overwrite: bool, resume: bool) -> None:
        """Make the directory; refuse to clobber an existing run unless asked to overwrite or resume."""
        if self.path.exists() and any(self.path.iterdir()) and not resume:
            if not overwrite:
                raise RunError(
                    f"run directory {self.path} already exists; pass --overwrite to replace it "
                    "or --resume to continue it."
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_setup(self, config: RunConfig, info: dict[str, Any]) -> None:
        """Record the config and what the run was trained on."""
        atomic_write_text(self.config_file, dump_config(config))
        atomic_write_json(self.info_file, {**info, "lmrec_version": __version__})

    def info(self) -> dict[str, Any]:
        """The run's record of its dataset and model."""
        if not self.info_file.is_file():
            raise RunError(f"{self.path} is not an lmrec run directory (no run.json); train one with `lmrec train`.")
        return json.loads(self.info_file.read_text())

    def config(self) -> RunConfig:
        """The run's validated config."""
        return validate_config(load_yaml(self.config_file))

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Atomically save a checkpoint dict."""
        atomic_write(path, lambda handle: torch.save(state, handle))

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint, turning a corrupt or truncated file into a clear error."""
        if not path.is_file():
            raise RunError(f"checkpoint {path} does not exist; train the run first with `lmrec train`.")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise RunError(
                f"checkpoint {path} is corrupt or incompatible ({exc.__class__.__name__}); "
                "retrain the run or restore the file."
            ) from None

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
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise RunError(
                f"checkpoint {self.model_file} does not fit model {state['model']}: {str(exc).splitlines()[0]}"
            ) from None
        model.eval()
        return model

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Atomically write metrics.json."""
        atomic_write_json(self.metrics_file, metrics)

    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json."""
        if not self.metrics_file.is_file():
            raise RunError(f"{self.path} has no metrics.json; the run did not finish training.")
        return json.loads(self.metrics_file.read_text())
