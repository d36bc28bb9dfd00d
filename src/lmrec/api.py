"""The Python API for notebooks and pipelines: prepare, train, evaluate, and recommend with original ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmrec.atomic import atomic_write_text
from lmrec.config import RunConfig, build_config, dump_config, resume_config
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, DataError, Interrupted, RunError
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.evaluation.evaluator import evaluate as evaluate_model
from lmrec.inference.recommender import Recommender, classifier_histories, load_reranker
from lmrec.models.base import SequentialRecommender, build_model, model_class
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads, deferred_interrupts
from lmrec.text.table import attach_item_text, item_text_table
from lmrec.training.trainer import Trainer, TrainState, peak_rss_mb, seed_everything

log = logging.getLogger(__name__)


def prepare(source: str | Path, out: str | Path, **options: Any) -> PreparedDataset:
    """Read, clean, sequence and split a behaviour log into a PreparedDataset (see `lmrec data prepare`)."""
    from lmrec.data.prepare import prepare as _prepare

    return _prepare(source, out, **options)


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
) -> dict[str, Any]:
    """Train a model on a prepared dataset, evaluate its best checkpoint, and return its metrics.json.

    `init` starts from a pre-trained checkpoint (`lmrec pretrain`, or another run): its architecture
    settings become the defaults, and every weight that does not belong to its catalogue is loaded.
    `resume` continues the run as it was configured (see `config.resume_config`). Everything is checked
    before the run folder is touched, and the folder is locked while training so that no second
    process trains into it.
    """
    dataset = PreparedDataset.load(data)
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=resume)
    changes: dict[str, list[Any]] = {}
    if resume:
        config, changes = _resume_setup(run, dataset, model, config, config_file, overrides, seed, init)
        pretrained = None
    else:
        pretrained = load_pretrained(init) if init is not None else None
        if config is None:
            base = [f"model.{k}={json.dumps(v)}" for k, v in pretrained["params"].items()] if pretrained else []
            name = model or (pretrained or {}).get("model")
            config = build_config(name, config_file, base + list(overrides or []), seed)
        config = with_text_dim(config)
    configure_threads(config.train.threads)
    seed_everything(config.seed)
    model_ = build_model(config.model_name, dataset.n_items, config.model_params)
    text_summary = attach_item_text(model_, dataset, progress)
    init_summary = transfer_weights(model_, pretrained) if pretrained else None
    trainer = Trainer(dataset, config, run, progress=progress, model=model_)
    trainer.prepare(resume=resume)  # a resumed run's checkpoint is restored (and checked) before any write
    with run.lock():
        with deferred_interrupts():  # an old run being replaced is removed whole or not at all
            run.create(overwrite=overwrite, resume=resume)
        try:
            info = _run_info(data, dataset, config, init, text_summary)
            _start_run(run, config, changes, trainer.state.epoch, info, resume)
            state = trainer.fit()
            metrics = _final_metrics(run, dataset, config, state)
            if text_summary:
                metrics["item_text"] = text_summary
            if init_summary:
                metrics["init"] = {"from": str(init), **init_summary}
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
    return metrics


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


def _final_metrics(run: RunDir, dataset: PreparedDataset, config: RunConfig, state: TrainState) -> dict[str, Any]:
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


def pretrain(
    data: list[str | Path],
    out: str | Path,
    overrides: list[str] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    contrastive_weight: float = 0.1,
    progress: bool = False,
) -> dict[str, Any]:
    """Pre-train an inductive lmrec model (text only, no IDs) on one or more prepared datasets."""
    from lmrec.training.pretrain import Pretrainer

    if not data:
        raise DataError("pretrain needs at least one prepared dataset.")
    datasets = [PreparedDataset.load(d) for d in data]
    config = with_text_dim(build_config("lmrec", None, [*(overrides or []), "model.use_id=false"], seed))
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=False)
    configure_threads(config.train.threads)
    seed_everything(config.seed)
    model_ = build_model("lmrec", datasets[0].n_items, config.model_params)
    tables = [item_text_table(model_.config, dataset, progress) for dataset in datasets]
    sources = [(dataset, table) for dataset, (table, _) in zip(datasets, tables, strict=True)]
    trainer = Pretrainer(model_, sources, config, contrastive_weight=contrastive_weight, progress=progress)
    scores = trainer.fit()  # nothing is written before this returns: an interrupted pre-training leaves no folder
    names = [d.name for d in datasets]
    metrics = {
        "model": "lmrec",
        "pretrained_on": names,
        "valid": scores,
        "epochs": len(trainer.history),
        "train_seconds": trainer.train_seconds,
        "history": trainer.history,
    }
    state = {k: v for k, v in model_.state_dict().items() if k not in model_.catalogue_keys()}
    encoder = {key: tables[0][1][key] for key in ("encoder", "model_id")}
    info = {
        "model": "lmrec",
        "pretrained_on": names,
        "datasets": [str(Path(d).resolve()) for d in data],
        "item_text": encoder,
    }
    checkpoint = {"model": "lmrec", "params": config.model_params, "state_dict": state, "pretrained_on": names}
    with run.lock(), deferred_interrupts():  # a few small writes: all of them, or (on an error) none
        run.create(overwrite=overwrite, resume=False)
        try:
            run.write_setup(config, info)
            run.save(run.model_file, checkpoint)
            run.write_metrics(metrics)
            run.set_state("finished", epochs_done=len(trainer.history))
        except Exception:
            run.discard()
            raise
    return metrics


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


def evaluate(
    run: str | Path,
    split: str = "test",
    ks: list[int] | None = None,
    mask_history: bool | None = None,
    data: str | Path | None = None,
    sampled_negatives: int | None = None,
    rerank: str | Path | None = None,
    rerank_top: int = 20,
    rerank_weight: float | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a run's best model on a split of its dataset: full ranking, or against sampled negatives.

    With `rerank` (a behaviour-classifier run on the same prepared dataset), each target's first-stage
    top `rerank_top` is re-ordered before the metrics are computed: by the classifier's probability, or,
    with `rerank_weight`, by the first stage's score plus that weight times the classifier's log-odds.
    """
    if rerank is not None and sampled_negatives is not None:
        raise ConfigError("re-ranking re-orders a full ranking's top; drop the sampled negatives to use it.")
    recommender = Recommender.load(run, data=data)
    config = recommender.config.eval
    ks = ks or config.ks
    evaluator = Evaluator(
        recommender.dataset,
        split,
        ks=sorted({*ks, rerank_top}) if rerank else ks,
        mask_history=config.mask_history if mask_history is None else mask_history,
        batch_size=config.batch_size,
        sampled_negatives=sampled_negatives,
    )
    result = evaluator(recommender.model)
    if rerank is None:
        return result
    from lmrec.evaluation.rerank import rerank_result
    from lmrec.inference.classifier import rerank as reorder

    classifier = load_reranker(rerank, recommender.dataset)
    histories, rows = classifier_histories(classifier, recommender.dataset, result.users, result.positions)
    candidates = result.topk[:, :rerank_top]
    # The first stage's scores are only needed (one more scoring pass) when the order blends them in.
    first = None if rerank_weight is None else evaluator.candidate_scores(recommender.model, candidates)
    reordered, _ = reorder(
        classifier,
        result.users,
        histories,
        candidates,
        rows,
        progress=progress,
        first_stage=first,
        weight=rerank_weight,
    )
    return rerank_result(result, reordered)
