"""Training the behaviour classifier: its two stages, and a run that trains, scores and saves it.

Training has two stages (`train_classifier`):
1. the bias terms are an L2-regularised logistic regression on a global bias, item biases, optional user
   biases (`user_bias`, off by default: fitted, they absorbed the leniency signal that the features must
   carry for unseen users; ML-100K validation AUC 0.777 with them, 0.787 without) and three features of
   the user's strict past, defined for users the training log never saw (most test users of a temporal
   split): the past label rate (share of positives among all their strictly
   earlier events, shrunk towards the training rate: an online user bias), the past residual (how their
   labels departed from those items' training rates: leniency net of what they chose), and the text
   affinity (those departures weighted by how much each past item's text resembles the candidate's,
   max(cos, 0)² of the frozen encoder's embeddings over the last 50 events: "liked things like this").
   Fitted by full-batch L-BFGS on all training examples (or only the subsample,
   `bias_examples="subsample"`), the L2 strength chosen by validation log-loss. The affinity's window (50)
   and power (2) were chosen on ML-100K's validation events (rating >= 4) among 20/50/200 and 1/2/4/8/16;
2. with the biases frozen, the cross-encoder (LoRA adapters or every weight, plus its head) learns the
   residual with binary cross-entropy on a seeded subsample of the training examples, under an epoch and
   time budget, keeping the state of lowest validation log-loss. The untrained state is the bias model
   itself, so an encoder that never helps on validation is not kept. With `user_bias` on, each example's
   user bias is replaced by the fallback with probability `user_bias_dropout` (default 1: always), so that the
   encoder learns to read a user's taste from the history text as it must for users without training
   events; the user bias of known users is added at prediction. On ML-100K's validation events 1.0 beat
   0.5 and 0.0 (log-loss after 1,000 examples: 0.621 against 0.631 without the past rate; 0.5788 against
   0.5808 with it).

The examples come from `lmrec.data.labels`, the classifier from `lmrec.models.classifier` (built by
`lmrec.inference.classifier.build_classifier`). Seeds and peak memory come from the sequence trainer
(`lmrec.training.trainer`); the loop itself is the classifier's own (steps, not epochs, between checks;
the best state kept in memory; no resume).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from lmrec.atomic import atomic_write, atomic_write_json, atomic_write_text
from lmrec.data.dataset import PreparedDataset
from lmrec.data.labels import EventLog, Examples, ExampleSets, check_label, example_sets, load_events, parse_label
from lmrec.evaluation.metrics import classification_metrics, log_loss, roc_auc
from lmrec.inference.classifier import build_classifier, progress_bar
from lmrec.models.classifier import MODEL_NAME, Classifier, ClassifierConfig, report_truncation, shrunk_rates
from lmrec.models.cross_encoder import HISTORY_FEATURES, CrossEncoder, pair_token_lengths, tokenize_pairs
from lmrec.registry.run import LOCK_NAME, RunDir
from lmrec.training.distributed import refuse_distributed
from lmrec.training.trainer import peak_rss_mb, seed_everything
from lmrec.training.training_log import TrainingLog, epoch_limit, time_budget
from lmrec.version import __version__

log = logging.getLogger(__name__)

BIAS_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
STREAM_TORCH = 5  # the loop's random stream (streams 1-4 draw the examples, see `lmrec.data.labels`)

# -- stage 1: the bias terms ---------------------------------------------------------------------------


def _bias_loss(clf: Classifier, examples: Examples, features: torch.Tensor, l2: float) -> torch.Tensor:
    """Mean BCE of the bias terms plus the L2 penalty on the user and item biases."""
    model = clf.model
    logits = model.bias_logit(torch.as_tensor(examples.user), torch.as_tensor(examples.item), features)
    labels = torch.as_tensor(examples.label, dtype=logits.dtype)
    penalty = model.user_bias.weight.square().sum() + model.item_bias.weight.square().sum()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + l2 * penalty


def _fit_bias_l2(clf: Classifier, examples: Examples, features: torch.Tensor, l2: float) -> None:
    """Full-batch L-BFGS on the bias terms from zero."""
    params = clf.model.bias_parameters()
    with torch.no_grad():
        for p in params:
            p.zero_()
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _bias_loss(clf, examples, features, l2)
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_biases(clf: Classifier, train: Examples, valid: Examples, l2: float | None = None) -> dict[str, Any]:
    """Stage 1: fit the bias terms; `l2` None picks the grid value of lowest validation log-loss, or 1/N
    without validation examples (a prior variance of 1/2 on each bias whatever the number N of examples).

    Marks the users and items of `train` as known (all others use the fallback slot, bias 0), takes the
    training label rate as the prior of the past-rate feature, and each item's training label rate (shrunk
    towards it with RATE_PSEUDO_COUNT examples) as what the residual features measure departures from.
    """
    model = clf.model
    for p in model.bias_parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        model.user_known.zero_()
        model.item_known.zero_()
        if clf.config.user_bias:
            model.user_known[torch.as_tensor(np.unique(train.user))] = True
        model.item_known[torch.as_tensor(np.unique(train.item))] = True
        prior = float(train.label.mean())
        model.rate_prior.fill_(prior)
        model.item_rate.copy_(torch.from_numpy(shrunk_rates(train, clf.dataset.n_items, prior)))
    clf.refresh_residuals()
    train_features = torch.as_tensor(clf.features(train), dtype=torch.float32)
    valid_features = torch.as_tensor(clf.features(valid), dtype=torch.float32)
    grid = [l2] if l2 is not None else list(BIAS_L2_GRID) if len(valid) else [1.0 / len(train)]
    scores: dict[float, float] = {}
    for value in grid:
        _fit_bias_l2(clf, train, train_features, value)
        if len(valid):
            with torch.no_grad():
                scores[value] = float(_bias_loss(clf, valid, valid_features, 0.0))
    best = min(scores, key=scores.__getitem__) if scores else grid[0]
    if best != grid[-1]:
        _fit_bias_l2(clf, train, train_features, best)
    for p in model.bias_parameters():
        p.requires_grad_(False)
    return {
        "l2": best,
        "valid_logloss": scores,
        "feature_weights": dict(zip(HISTORY_FEATURES, model.feature_weights.tolist(), strict=True)),
        "prior": float(model.rate_prior),
    }


# -- stage 2: the cross-encoder ------------------------------------------------------------------------


@dataclass
class _Batches:
    """Training texts rendered once, and the seeded generator that shuffles them and drops user biases."""

    histories: list[str]
    candidates: list[str]
    examples: Examples
    features: np.ndarray
    generator: torch.Generator


def _encoder_parameters(model: CrossEncoder) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(trainable encoder parameters, head parameters)."""
    encoder = [p for p in model.backbone.parameters() if p.requires_grad]
    return encoder, list(model.head.parameters())


def trainable_state(model: CrossEncoder) -> dict[str, torch.Tensor]:
    """Copies of the parameters stage 2 trains (to keep the best validation state)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over `warmup` of the planned steps, then linear decay to zero."""
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def _valid_scores(valid: Examples, probs: np.ndarray) -> dict[str, float]:
    """Validation log-loss, and AUC when both classes are present."""
    scores = {"logloss": log_loss(valid.label, probs)}
    if 0 < valid.label.sum() < len(valid):
        scores["auc"] = roc_auc(valid.label, probs)
    return scores


def encoder_log() -> TrainingLog:
    """The record of stage 2: one row, TensorBoard scalars and console line per validation check."""
    return TrainingLog("logloss", log, unit="step", offset=0)


def fit_encoder(
    clf: Classifier,
    train: Examples,
    valid: Examples,
    progress: bool = False,
    training_log: TrainingLog | None = None,
) -> dict[str, Any]:
    """Stage 2: train the cross-encoder on `train` with the biases frozen; keep the best validation state.

    Each validation check is recorded in `training_log` (a new `encoder_log()` by default), whose history
    the report returns as `checks`.
    """
    training_log = encoder_log() if training_log is None else training_log
    config, model = clf.config, clf.model
    histories, candidates = clf.example_texts(train)
    truncated = int((pair_token_lengths(clf.tokenizer, histories, candidates) > config.max_length).sum())
    report_truncation(truncated, len(train), config.max_length)
    generator = torch.Generator().manual_seed(config.seed * 1000 + STREAM_TORCH)
    batches = _Batches(histories, candidates, train, clf.features(train), generator)
    encoder_params, head_params = _encoder_parameters(model)
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": config.encoder_lr}, {"params": head_params, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, config.warmup))
    # Validation inputs are rendered once: the bias terms, and so the history features, are frozen here.
    valid_texts = (*clf.example_texts(valid), clf.features(valid)) if len(valid) else None
    initial = _valid_scores(valid, clf.bias_probabilities(valid)) if len(valid) else {"logloss": math.nan}
    best = {"step": 0, "logloss": initial["logloss"]}
    best_state = trainable_state(model)
    losses: list[float] = []
    started, step, stopped_by = time.perf_counter(), 0, ""
    model.train()
    with tqdm(total=total, desc="training", unit="step", disable=not progress) as bar:
        for _ in range(config.epochs):
            for rows in torch.randperm(len(train), generator=generator).split(config.batch_size):
                losses.append(_train_step(clf, batches, rows.numpy(), optimizer))
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if valid_texts is not None and (step % config.eval_every == 0 or step == total):
                    _check(clf, valid, valid_texts, losses, training_log, best, best_state)
                if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                    stopped_by = time_budget(config.max_seconds)
                    break
            if stopped_by:
                break
    checks = training_log.history
    if valid_texts is not None and (not checks or checks[-1]["step"] != step):
        _check(clf, valid, valid_texts, losses, training_log, best, best_state)
    stopped_by = stopped_by or epoch_limit(config.epochs)
    training_log.stopped(stopped_by)
    if valid_texts is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return {
        "examples": len(train),
        "truncated": truncated,
        "steps": step,
        "planned_steps": total,
        "epochs": step / steps_per_epoch,
        "stopped_by": stopped_by,
        "seconds": time.perf_counter() - started,
        "best_step": best["step"] if valid_texts is not None else step,
        "best_valid_logloss": best["logloss"],
        "bias_valid": initial,
        "checks": checks,
    }


def _train_step(clf: Classifier, batches: _Batches, rows: np.ndarray, optimizer: torch.optim.Optimizer) -> float:
    """One optimiser step of BCE on a batch of rendered examples."""
    config = clf.config
    tokens = tokenize_pairs(
        clf.tokenizer, [batches.histories[i] for i in rows], [batches.candidates[i] for i in rows], config.max_length
    )
    examples = batches.examples.subset(rows)
    drop = torch.rand(len(rows), generator=batches.generator) < config.user_bias_dropout
    features = torch.as_tensor(batches.features[rows])
    logits = clf.model(tokens, torch.as_tensor(examples.user), torch.as_tensor(examples.item), features, drop)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.as_tensor(examples.label, dtype=logits.dtype)
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _check(
    clf: Classifier,
    valid: Examples,
    inputs: tuple[list[str], list[str], np.ndarray],
    losses: list[float],
    training_log: TrainingLog,
    best: dict[str, float],
    best_state: dict[str, torch.Tensor],
) -> None:
    """Evaluate on validation; keep the state when its log-loss is the best so far; record the check."""
    step = len(losses)
    checks = training_log.history
    since = len(losses) - (int(checks[-1]["step"]) if checks else 0)
    histories, candidates, features = inputs
    probs, _ = clf.predict_texts(histories, candidates, valid.user, valid.item, features)
    scores = _valid_scores(valid, probs)
    logloss = scores["logloss"]
    if not logloss >= best["logloss"]:
        best.update(step=step, logloss=logloss)
        best_state.update(trainable_state(clf.model))
    training_log.record(step, float(np.mean(losses[-since:])), scores, (best["logloss"], int(best["step"])))


def train_classifier(
    events: EventLog,
    config: ClassifierConfig,
    sets: ExampleSets,
    progress: bool = False,
    training_log: TrainingLog | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Build and train a classifier in two stages (biases, then the cross-encoder); return it and a report.

    Seeded like every training (`seed_everything`); `build_classifier` seeds torch again right before the
    encoder is made, which is what fixes its initial weights. `training_log` records stage 2's checks.
    """
    seed_everything(config.seed)
    clf = build_classifier(config, events)
    bias_train = sets.train if config.bias_examples == "all" else sets.train_used
    biases = fit_biases(clf, bias_train, sets.valid_used, config.bias_l2)
    encoder = fit_encoder(clf, sets.train_used, sets.valid_used, progress, training_log)
    return clf, {"bias": {**biases, "examples": len(bias_train)}, "encoder": encoder}


# -- runs ----------------------------------------------------------------------------------------------


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Trainable (in stage 2) and total parameter counts."""
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }


def train_run(
    data: str | Path, out: str | Path, config: ClassifierConfig, overwrite: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Train a classifier on a prepared dataset into run directory `out`; return (and write) its metrics."""
    from lmrec.text.encoder import TextEncoder

    refuse_distributed("the behaviour classifier (`lmrec classify train`)")

    dataset = PreparedDataset.load(data)
    events = load_events(dataset)
    check_label(parse_label(config.label), events)
    run = RunDir(out)
    run.check_new(overwrite=overwrite, resume=False)
    encoder = TextEncoder(config.encoder, max_length=config.max_length)
    sets = example_sets(events, config)
    training_log = encoder_log()  # its TensorBoard scalars are saved with the run, once it is done
    with run.lock():  # held from the start, so that a second training of this folder stops at once
        fresh = not any(p.name != LOCK_NAME for p in run.path.iterdir())
        try:
            metrics, clf, probs, baseline = _train_and_score(events, config, sets, progress, training_log)
        except BaseException:
            if fresh:
                run.discard()  # nothing was written; a replaced run stays as it was until the new one is done
            raise
        run.create(overwrite=overwrite, resume=False)
        save_model(clf, run.path / "model")
        save_predictions(run.path / "predictions" / "test.npz", sets.test_used, probs, baseline)
        training_log.save(run.logs_dir)
        atomic_write_text(run.config_file, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        info = {
            "model": MODEL_NAME,
            "dataset": str(Path(data).resolve()),
            "dataset_name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "label": config.label,
            "mode": config.mode,
            "encoder": str(encoder.path),
            "encoder_model_id": encoder.model_id,
            "lmrec_version": __version__,
            "state": "finished",
        }
        run.write_metrics({"model": MODEL_NAME, "dataset": dataset.name, **metrics})
        atomic_write_json(run.info_file, info)  # last: a run that reads as finished has its metrics
    return run.metrics()


def _train_and_score(
    events: EventLog, config: ClassifierConfig, sets: ExampleSets, progress: bool, training_log: TrainingLog
) -> tuple[dict[str, Any], Classifier, np.ndarray, np.ndarray]:
    """Train the classifier, score the test examples, and gather the metrics (nothing is written here)."""
    started = time.perf_counter()
    clf, report = train_classifier(events, config, sets, progress, training_log)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with progress_bar(len(sets.test_used), progress) as bar:
        probs, truncated = clf.predict(sets.test_used, bar.update)
    baseline = clf.bias_probabilities(sets.test_used)
    test_seconds = time.perf_counter() - started
    metrics = {
        "model": MODEL_NAME,
        "label": config.label,
        "mode": config.mode,
        "test": classification_metrics(sets.test_used.label, probs),
        "baseline": classification_metrics(sets.test_used.label, baseline),
        "baseline_name": "stage 1 alone: logistic regression on user and item biases"
        + (" and the past label rate" if config.past_rate else ""),
        "examples": {
            "train": len(sets.train),
            "train_used": len(sets.train_used),
            "bias_train": report["bias"]["examples"],
            "valid": len(sets.valid),
            "valid_used": len(sets.valid_used),
            "test": len(sets.test),
            "test_used": len(sets.test_used),
            "test_subsampled": len(sets.test_used) < len(sets.test),
            "test_positive_rate": float(sets.test_used.label.mean()),
        },
        "truncated": {"max_length": config.max_length, "train": report["encoder"]["truncated"], "test": truncated},
        "training": report,
        "parameters": count_parameters(clf.model),
        "train_seconds": train_seconds,
        "test_seconds": test_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    return metrics, clf, probs, baseline


def save_predictions(path: Path, examples: Examples, probs: np.ndarray, baseline: np.ndarray) -> None:
    """Per-example test predictions, for bootstrap intervals and paired comparisons without re-running the model."""
    arrays = {"user": examples.user, "item": examples.item, "end": examples.end, "label": examples.label}
    atomic_write(path, lambda handle: np.savez(handle, **arrays, prob=probs, baseline=baseline))


def save_model(clf: Classifier, folder: Path) -> None:
    """Write the adapter (lora) or whole encoder + tokenizer (full), and the head and biases; swap the folder in."""
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if clf.config.mode == "lora":
        clf.model.backbone.save_pretrained(staging / "adapter")
    else:
        clf.model.backbone.save_pretrained(staging / "encoder")
        clf.tokenizer.save_pretrained(staging / "encoder")
    head = {k: v for k, v in clf.model.state_dict().items() if not k.startswith("backbone.")}
    atomic_write(staging / "head.pt", lambda handle: torch.save(head, handle))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
