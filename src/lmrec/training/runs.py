"""Training runs: train a model into a run folder, from scratch, from a pre-trained checkpoint (`init`) or
warm-started from a run on an earlier preparation of the catalogue, and record what it did.

Everything is checked before the run folder is touched; the folder is locked while training, and an
interrupted or failed run says what it kept. `lmrec.train(...)` and `lmrec train` call `train` here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmrec.atomic import atomic_write_text
from lmrec.config import RunConfig, build_config, dump_config, resume_config
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, DataError, Interrupted, RunError
from lmrec.evaluation.evaluator import evaluate as evaluate_model
from lmrec.models.base import SequentialRecommender, build_model, model_class
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads, deferred_interrupts
from lmrec.text.table import attach_item_text
from lmrec.training import distributed
from lmrec.training.losses import resolved_loss
from lmrec.training.trainer import Trainer, TrainState, ValidationHook, peak_rss_mb, seed_everything
from lmrec.training.warm import warm_start as warm_weights

log = logging.getLogger(__name__)


@distributed.in_session
def train(
    data: str | Path,
    out: str | Path,
    model: str | None = None,
    config: RunConfig | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    init: str | Path | None = None,
    warm_start: str | Path | None = None,
    on_validation: ValidationHook | None = None,
) -> dict[str, Any]:
    """Train a model on a prepared dataset, evaluate its best checkpoint, and return its metrics.json.

    `init` starts from a pre-trained checkpoint (`lmrec pretrain`, or another run): its architecture
    settings become the defaults, and every weight that does not belong to its catalogue is loaded.
    `warm_start` continues a run (or registered version) of the same model trained on an earlier
    preparation of this catalogue: every weight is loaded, item rows matched by original item id.
    `resume` continues the run as it was configured (see `config.resume_config`). Everything is checked
    before the run folder is touched, and the folder is locked while training so that no second
    process trains into it. `on_validation` is the trainer's hook after each validation (see `Trainer`).

    Under torchrun (several processes) every rank checks and prepares the same way, then rank 0 alone locks
    and writes the run folder while all ranks train (`lmrec.training.distributed`); every rank returns rank
    0's metrics. Models without gradient training are refused there.
    """
    if warm_start is not None and (init is not None or resume):
        raise ConfigError("--warm-start starts a new run from a trained one; it cannot go with --init or --resume.")
    dataset = PreparedDataset.load(data)
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=resume)
    parent = _warm_source(warm_start) if warm_start is not None else None
    changes: dict[str, list[Any]] = {}
    if resume:
        config, changes = _resume_setup(run, dataset, model, config, config_file, overrides, seed, init)
        pretrained = None
    else:
        pretrained = load_pretrained(init) if init is not None else None
        if parent is not None and config is None and config_file is None:
            config_file = RunDir(warm_start).config_file  # the warm-start run's settings are the defaults
        if config is None:
            base = [f"model.{k}={json.dumps(v)}" for k, v in pretrained["params"].items()] if pretrained else []
            name = model or (pretrained or {}).get("model")
            config = build_config(name, config_file, base + list(overrides or []), seed)
        config = with_text_dim(config)
    group = distributed.current()
    if group.active:
        distributed.refuse_untrainable(model_class(config.model_name))
        progress = progress and group.main
    configure_threads(config.train.threads)
    seed_everything(config.seed)
    model_ = build_model(config.model_name, dataset.n_items, config.model_params)
    text_summary = attach_item_text(model_, dataset, progress)
    init_summary = transfer_weights(model_, pretrained) if pretrained else None
    if parent is not None:
        init_summary = warm_weights(model_, parent[0], parent[1], list(dataset.item_ids))
    trainer = Trainer(dataset, config, run, progress=progress, model=model_, on_validation=on_validation)
    trainer.prepare(resume=resume)  # a resumed run's checkpoint is restored (and checked) before any write
    distributed.barrier(group)  # under torchrun, every rank has checked the folder before rank 0 writes it
    if not group.main:
        try:
            trainer.fit()
        except Interrupted as exc:
            exc.message = f"training process {group.rank} stopped; process 0 records what the run kept."
            raise
        return distributed.broadcast({}, group)
    with run.lock():
        with deferred_interrupts():  # an old run being replaced is removed whole or not at all
            run.create(overwrite=overwrite, resume=resume)
        try:
            info = _run_info(data, dataset, config, init, text_summary)
            if warm_start is not None:
                info["warm_start"] = str(Path(warm_start).resolve())
            _start_run(run, config, changes, trainer.state.epoch, info, resume)
            state = trainer.fit()
            metrics = _final_metrics(run, dataset, config, state, progress)
            if text_summary:
                metrics["item_text"] = text_summary
            if init_summary:
                metrics["warm_start" if parent else "init"] = {"from": str(warm_start or init), **init_summary}
            if group.active:
                metrics["distributed"] = _distributed_info(group, config)
            run.write_metrics(metrics)
            run.set_state("finished", epochs_done=state.epoch)
        except (Interrupted, KeyboardInterrupt) as exc:
            message = _keep_interrupted(run, trainer.state.epoch, data)
            if isinstance(exc, Interrupted):
                exc.message = message
            raise
        except Exception:
            _keep_failed(run, trainer.state.epoch)
            raise
    return distributed.broadcast(metrics, group)


def _distributed_info(group: distributed.Group, config: RunConfig) -> dict[str, Any]:
    """What metrics.json records of a distributed training: processes, backend, device, batch split."""
    return {
        "processes": group.world_size,
        "backend": group.backend,
        "device": group.device.type,
        "global_batch_size": config.train.batch_size,
        "windows_per_process": -(-config.train.batch_size // group.world_size),
    }


def check_distributed(
    out: str | Path,
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    init: str | Path | None = None,
) -> None:
    """Refuse before torchrun starts (`lmrec train --nproc N`) what each of its processes would refuse: a run
    folder that exists, a bad config, or a model without gradient training (pop, itemknn)."""
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=resume)
    if resume:
        name = run.config().model_name
    elif model is None and config_file is None and init is not None:
        name = str(load_pretrained(init)["model"])
    else:
        name = build_config(model, config_file, list(overrides or []), seed).model_name
    distributed.refuse_untrainable(model_class(name))


def _start_run(
    run: RunDir,
    config: RunConfig,
    changes: dict[str, list[Any]],
    epoch: int,
    info: dict[str, Any],
    resume: bool,
) -> None:
    """Record a new run in its emptied folder, or record a resume (and its allowed changes)."""
    if not resume:
        run.write_setup(config, info)
        return
    if changes:
        atomic_write_text(run.config_file, dump_config(config))
    run.set_state("running", resumes=[*run.info().get("resumes", []), {"from_epoch": epoch, "changed": changes}])


def _resume_setup(
    run: RunDir,
    dataset: PreparedDataset,
    model: str | None,
    config: RunConfig | None,
    config_file: Path | None,
    overrides: list[str] | None,
    seed: int | None,
    init: str | Path | None,
) -> tuple[RunConfig, dict[str, list[Any]]]:
    """The saved config of a run to resume, with the changes resuming allows; refuses a different dataset."""
    info = run.info()
    if info.get("fingerprint") != dataset.fingerprint:
        raise RunError(
            f"run {run.path} was trained on another dataset preparation; it cannot resume on {dataset.path}."
        )
    if init is not None and str(Path(init).resolve()) != info.get("init"):
        raise ConfigError(
            f"cannot resume with --init {init}: run {run.path} started from {info.get('init') or 'no checkpoint'}, "
            "and a resumed run continues from its own last checkpoint; drop --init."
        )
    if config is not None:
        return resume_config(run.config(), overrides=_as_overrides(config))
    return resume_config(run.config(), model, config_file, overrides, seed)


def _as_overrides(config: RunConfig) -> list[str]:
    """A whole config as `section.key=value` overrides (JSON is YAML), to compare it with a saved one."""
    dumped = config.model_dump(mode="json")
    return [
        f"{section}.{k}={json.dumps(v)}" for section in ("model", "train", "eval") for k, v in dumped[section].items()
    ] + [f"seed={config.seed}"]


def _run_info(
    data: str | Path, dataset: PreparedDataset, config: RunConfig, init: str | Path | None, text: dict[str, Any]
) -> dict[str, Any]:
    """What run.json records about a new run: its dataset, model, text encoder and starting checkpoint."""
    info = {
        "dataset": str(Path(data).resolve()),
        "dataset_name": dataset.name,
        "fingerprint": dataset.fingerprint,
        "model": config.model_name,
        "n_items": dataset.n_items,
        **({"item_text": {key: text[key] for key in ("encoder", "model_id")}} if text else {}),
    }
    return {**info, "init": str(Path(init).resolve())} if init is not None else info


def _final_metrics(
    run: RunDir, dataset: PreparedDataset, config: RunConfig, state: TrainState, progress: bool
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on valid and test (ranks saved for paired tests): metrics.json."""
    model_ = run.load_model(dataset.fingerprint)
    results = {
        split: evaluate_model(
            model_,
            dataset,
            split,
            ks=config.eval.ks,
            mask_history=config.eval.mask_history,
            batch_size=config.eval.batch_size,
            progress=progress,
        )
        for split in ("valid", "test")
    }
    for split, result in results.items():
        result.save(run.ranks_file(split))
    return {
        "model": config.model_name,
        "dataset": dataset.name,
        "valid": results["valid"].metrics,
        "test": results["test"].metrics,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_by": state.stopped_by,
        "seconds_per_epoch": state.train_seconds / max(1, state.epoch),
        "train_seconds": state.train_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "mask_history": results["test"].mask_history,
        "protocol": results["test"].protocol_info(),
        "seed": config.seed,
        "loss": resolved_loss(config.train.loss, dataset.n_items),
        "history": state.history,
    }


def _keep_interrupted(run: RunDir, epochs: int, data: str | Path) -> str:
    """Record an interrupted run (or remove it when no epoch finished) and say what was kept."""
    if not (run.last_file.is_file() and run.info_file.is_file()):
        run.discard()
        return f"training interrupted before its first epoch finished; nothing was kept ({run.path} was removed)."
    run.set_state("interrupted", epochs_done=epochs)
    return (
        f"training interrupted after epoch {epochs}; kept {run.last_file} and the best model so far; "
        f"resume with `lmrec train {data} --out {run.path} --resume`."
    )


def _keep_failed(run: RunDir, epochs: int) -> None:
    """A run that failed keeps its checkpoints, marked failed; one with nothing to resume is removed."""
    if run.last_file.is_file() and run.info_file.is_file():
        run.set_state("failed", epochs_done=epochs)
    else:
        run.discard()


def load_pretrained(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict from a pre-training directory, a run directory or a model file."""
    path = Path(path)
    candidates = [path, path / "model" / "model.pt", path / "model.pt"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise RunError(f"no checkpoint at {path}; give a directory written by `lmrec pretrain` or `lmrec train`.")
    state = RunDir(found.parent).load_checkpoint(found)
    if not {"model", "params", "state_dict"} <= set(state):
        raise RunError(f"{found} is not an lmrec model checkpoint (it lacks model, params or weights).")
    return state


def _warm_source(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint of a run (or registered version) to warm-start from, and its catalogue's item ids."""
    info = RunDir(path).info()
    source = Path(info.get("dataset", ""))
    if not (source / "manifest.json").is_file():
        raise DataError(
            f"the dataset {source} of {path} is gone; a warm start needs it to match items by their original ids."
        )
    return load_pretrained(path), list(PreparedDataset.load(source).item_ids)


def transfer_weights(model: SequentialRecommender, pretrained: dict[str, Any]) -> dict[str, Any]:
    """Load every pre-trained weight whose name and shape fit, except those of the source catalogue."""
    if pretrained["model"] != model.name:
        raise RunError(
            f"the checkpoint holds a {pretrained['model']} model, not {model.name}; use --model {pretrained['model']}."
        )
    skip = set(model.catalogue_keys())
    own = model.state_dict()
    keep = {k: v for k, v in pretrained["state_dict"].items() if k in own and k not in skip and own[k].shape == v.shape}
    if not keep:
        raise RunError("no weight of the checkpoint fits this model; check that hidden, layers and heads match.")
    model.load_state_dict(keep, strict=False)
    return {"loaded": len(keep), "skipped": sorted(set(pretrained["state_dict"]) - set(keep))}


def with_text_dim(config: RunConfig) -> RunConfig:
    """The config with model.text_dim taken from its text encoder (384 for all-MiniLM-L6-v2, 576 for SmolLM2)
    unless it was set explicitly, so that choosing another encoder needs one setting, not two."""
    reads_text = model_class(config.model_name).uses_item_text and config.model.get("use_text", True) is not False
    if "text_dim" in config.model or not reads_text:
        return config
    from lmrec.text.encoder import load_config
    from lmrec.text.sources import resolve_model_path

    dim = int(load_config(resolve_model_path(config.model.get("encoder"))).hidden_size)
    return config.model_copy(update={"model": {**config.model, "text_dim": dim}})
