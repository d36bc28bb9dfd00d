"""The Python API for notebooks and pipelines: prepare, train, evaluate, and recommend with original ids.

Thin functions over the packages: training runs are `lmrec.training.runs`, loading a run for use is
`lmrec.inference.recommender`; `lmrec.train`, `lmrec.evaluate` and `lmrec.Recommender` come from here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmrec.config import build_config
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, DataError
from lmrec.evaluation.evaluator import EvalResult, Evaluator
from lmrec.inference.recommender import Recommender, classifier_histories, load_reranker
from lmrec.models.base import build_model
from lmrec.registry.run import RunDir
from lmrec.runtime import configure_threads, deferred_interrupts
from lmrec.text.table import item_text_table
from lmrec.training.runs import load_pretrained, train, with_text_dim
from lmrec.training.trainer import seed_everything

__all__ = [
    "Recommender",
    "classifier_histories",
    "evaluate",
    "export",
    "item_text_table",
    "load_pretrained",
    "load_reranker",
    "prepare",
    "pretrain",
    "report",
    "retrain",
    "train",
    "tune",
    "with_text_dim",
]

log = logging.getLogger(__name__)


def prepare(source: str | Path, out: str | Path, **options: Any) -> PreparedDataset:
    """Read, clean, sequence and split a behaviour log into a PreparedDataset (see `lmrec data prepare`)."""
    from lmrec.data.prepare import prepare as _prepare

    return _prepare(source, out, **options)


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
    if not model_.inductive:
        raise ConfigError(
            "pretrain trains a text-only model for any catalogue; model.neighbourhood_weight > 0 counts one "
            "catalogue's transitions: leave it at 0 here and set it when training on the target (lmrec train --init)."
        )
    tables = [item_text_table(model_.config, dataset, progress) for dataset in datasets]
    sources = [(dataset, table) for dataset, (table, _) in zip(datasets, tables, strict=True)]
    trainer = Pretrainer(model_, sources, config, contrastive_weight=contrastive_weight, progress=progress)
    scores = trainer.fit()  # nothing is written before this returns: an interrupted pre-training leaves no folder
    names = [d.name for d in datasets]
    metrics = {
        "model": "lmrec",
        "pretrained_on": names,
        "valid": scores,
        "epochs": len(trainer.training_log.history),
        "stopped_by": trainer.stopped_by,
        "train_seconds": trainer.train_seconds,
        "history": trainer.training_log.history,
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
            trainer.training_log.save(run.logs_dir)
            run.set_state("finished", epochs_done=metrics["epochs"])
        except Exception:
            run.discard()
            raise
    return metrics


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
    result = evaluator(recommender.model, progress)
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


def export(
    run: str | Path,
    out: str | Path | None = None,
    format: str = "onnx",
    int8: bool = False,
    overwrite: bool = False,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Export a run for serving with ONNX Runtime (see `lmrec export`): the sequence encoder as `encoder.onnx`,
    the item table as `items.npy` and `manifest.json` in `out` (default RUN/export); returns the manifest.
    `int8` quantises the encoder dynamically (the item table stays float32)."""
    if format != "onnx":
        raise ConfigError(f"unknown export format {format!r}; the export format is onnx.")
    from lmrec.inference.onnx import export_onnx

    return export_onnx(run, out, int8=int8, overwrite=overwrite, data=data)


def report(runs: list[str | Path], out: str | Path | None = None, users: int = 5, progress: bool = False) -> Path:
    """Write one self-contained HTML report of runs trained on one prepared dataset, compared with the first
    (see `lmrec report`); `out` defaults to report.html in the first run. Returns the file written."""
    from lmrec.evaluation.report import write_report

    return write_report(runs, out, users=users, progress=progress)


def retrain(registry: str | Path, store: str, **options: Any) -> dict[str, Any]:
    """One retraining round on a registry from the events of a store (see `lmrec retrain`): the snapshot,
    the warm-started candidate, the gate's decision; `options` are the fields of `RetrainOptions`."""
    from lmrec.training.retrain import RetrainOptions
    from lmrec.training.retrain import retrain as run_round

    return run_round(registry, store, RetrainOptions(**options)).summary()


def tune(data: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Search a model's hyper-parameters (see `lmrec tune`): every trial and the best, written as best.yaml;
    `options` are those of `lmrec.training.tune.tune` (model, trials, timeout, space, overrides, seed, …)."""
    from lmrec.training.tune import tune as search

    return search(data, out, **options)
