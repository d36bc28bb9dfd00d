"""A behaviour classifier put to use: built from its encoder folder or loaded from a run, predictions for
one user after their full (and live) history, and re-ranking of a first stage's candidates.

Shared by the CLI, the Python API, the service and training (which builds its fresh classifier here);
nothing here imports training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.config import load_yaml
from lmrec.data.dataset import PreparedDataset
from lmrec.data.labels import EventLog, Examples, check_label, load_events, parse_label
from lmrec.errors import DataError, RunError
from lmrec.models.classifier import MODEL_NAME, Classifier, ClassifierConfig, make_config, report_truncation
from lmrec.models.cross_encoder import HISTORY_FEATURES, CrossEncoder
from lmrec.registry.run import RunDir, load_checkpoint

# -- building and loading ------------------------------------------------------------------------------


def item_vectors(config: ClassifierConfig, dataset: PreparedDataset) -> np.ndarray:
    """[n_items + 1, dim] normalised text embeddings of the catalogue by the classifier's base encoder
    (frozen, disk-cached), which the text-affinity feature compares; the same table as any model's."""
    from lmrec.text.table import item_text_table

    return item_text_table(config, dataset)[0].numpy()


def bind_classifier(model: CrossEncoder, tokenizer, config: ClassifierConfig, events: EventLog) -> Classifier:
    """The classifier of a cross-encoder on a dataset's events, with the item embeddings its text affinity needs."""
    spec = parse_label(config.label)
    vectors = item_vectors(config, events.dataset) if config.text_affinity else None
    return Classifier(model, tokenizer, config, spec, events, vectors)


def build_classifier(config: ClassifierConfig, events: EventLog) -> Classifier:
    """A fresh classifier: the encoder loaded from its folder, wrapped with LoRA adapters in `lora` mode.

    torch is seeded with `config.seed` right before the encoder is made, so that its LoRA adapters and the
    head start the same however the classifier is built.
    """
    from lmrec.text.encoder import check_max_length, load_config, load_model, load_tokenizer, resolve_model_path
    from lmrec.text.lora import wrap_lora

    check_label(parse_label(config.label), events)
    path = resolve_model_path(config.encoder)
    hf_config = load_config(path)
    tokenizer = load_tokenizer(path, hf_config)
    check_max_length(config.max_length, tokenizer, hf_config)
    torch.manual_seed(config.seed)
    backbone = load_model(path)
    if config.mode == "lora":
        backbone = wrap_lora(backbone, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    data = events.dataset
    model = CrossEncoder(backbone, int(hf_config.hidden_size), data.n_users, data.n_items, config.head_dropout)
    return bind_classifier(model, tokenizer, config, events)


def load_run(run: str | Path, data: str | Path | None = None) -> Classifier:
    """A trained classifier from its run directory, bound to its dataset (checked by fingerprint)."""
    from lmrec.text.encoder import TextEncoder, load_config, load_model, load_tokenizer

    rundir = RunDir(run)
    info = rundir.info()
    if info.get("model") != MODEL_NAME:
        raise RunError(f"{run} is a {info.get('model')} run, not a behaviour classifier (`lmrec classify train`).")
    config = make_config(**_read_yaml(rundir.config_file))
    dataset = PreparedDataset.load(data or info["dataset"])
    if dataset.fingerprint != info["fingerprint"]:
        raise RunError(f"run {run} was trained on another dataset preparation; its ids do not match {dataset.path}.")
    events = load_events(dataset)
    folder = rundir.path / "model"
    if config.mode == "lora":
        base = TextEncoder(info["encoder"], max_length=config.max_length)
        if base.model_id != info["encoder_model_id"]:
            raise RunError(f"the base encoder in {base.path} has changed since run {run} was trained.")
        path = base.path
    else:
        path = folder / "encoder"
    hf_config = load_config(path)
    backbone = load_model(path)
    if config.mode == "lora":
        from peft import PeftModel

        from lmrec.text.lora import peft_quietly

        with peft_quietly():
            backbone = PeftModel.from_pretrained(backbone, folder / "adapter")
    model = CrossEncoder(backbone, int(hf_config.hidden_size), dataset.n_users, dataset.n_items, config.head_dropout)
    _load_head(model, folder / "head.pt")
    model.eval()
    return bind_classifier(model, load_tokenizer(path, hf_config), config, events)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping (malformed YAML is one sentence with its line)."""
    if not path.is_file():
        raise RunError(f"{path} does not exist; the run directory is incomplete.")
    return load_yaml(path)


def _load_head(model: CrossEncoder, path: Path) -> None:
    """Load the head and bias tables, refusing a file that does not fit the model."""
    if not path.is_file():
        raise RunError(f"{path} does not exist; the run did not finish training.")
    state = load_checkpoint(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise RunError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise RunError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}).")


def load_predictions(run: str | Path) -> dict[str, np.ndarray]:
    """The saved test predictions of a classifier run."""
    path = Path(run) / "predictions" / "test.npz"
    if not path.is_file():
        raise RunError(f"{run} has no test predictions ({path}); train it with `lmrec classify train`.")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def progress_bar(total: int, progress: bool) -> tqdm:
    """The bar of a prediction pass (off unless `progress`); pass its `update` to `Classifier.predict_texts`."""
    return tqdm(total=total, desc="predicting", unit="ex", disable=not progress)


# -- predictions for one user --------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One predicted probability, in original ids."""

    item_id: str
    title: str
    probability: float
    seen: bool


class LaterEvent(Protocol):
    """An event after the dataset's (e.g. one posted to the service): its item, type and optional value."""

    item_id: str
    type: str | None
    value: float | None


def predict_user(
    clf: Classifier, user_id: str, item_ids: Sequence[str], later: Sequence[LaterEvent] = ()
) -> list[Prediction]:
    """Probabilities of the behaviour for one user (original id) and items, after the user's full known history
    followed by `later` events in time order (the service's live history; items the dataset lacks are skipped).

    The history text reads both; the history features (past label rate, residual, affinity) read the
    dataset's events only, as they are defined over its rows.
    """
    data = clf.dataset
    user = data.user_index.get(user_id)
    if user is None and not later:
        raise DataError(f"user {user_id!r} is not in {data.path}.")
    unknown = [i for i in item_ids if i not in data.item_index]
    if unknown:
        raise DataError(f"item {unknown[0]!r} is not in {data.path}.")
    items = np.asarray([data.item_index[i] for i in item_ids], dtype=np.int64)
    rows = np.arange(data.offsets[user], data.offsets[user + 1]) if user is not None else np.zeros(0, np.int64)
    recent_rows, recent_later = _recent(clf, rows, later)
    history = [*data.items[recent_rows].tolist(), *(data.item_index[e.item_id] for e in recent_later)]
    notes = [*clf.notes[recent_rows].tolist(), *(_later_note(clf, e) for e in recent_later)]
    text = clf.history_text(history[::-1], notes[::-1])
    users = np.full(len(items), -1 if user is None else user, dtype=np.int64)
    probs, truncated = clf.predict_texts(
        [text] * len(items), [clf.item_texts[i] for i in items.tolist()], users, items, _features(clf, user, items)
    )
    report_truncation(int(truncated.sum()), len(items), clf.config.max_length)
    in_dataset = np.isin(items, data.items[rows]).tolist()
    stored = {e.item_id for e in later}
    return [
        Prediction(item_id, data.item_title(int(i)), float(p), seen or item_id in stored)
        for item_id, i, p, seen in zip(item_ids, items, probs, in_dataset, strict=True)
    ]


def _recent(clf: Classifier, rows: np.ndarray, later: Sequence[LaterEvent]) -> tuple[np.ndarray, list[LaterEvent]]:
    """The last `config.history` events of the user's dataset `rows` followed by the `later` events whose item
    the dataset knows, oldest first. Read from the end, so that a long history costs nothing per request."""
    length = clf.config.history
    known: list[LaterEvent] = []
    for event in reversed(later):
        if len(known) == length:
            break
        if event.item_id in clf.dataset.item_index:
            known.append(event)
    return rows[max(len(rows) - (length - len(known)), 0) :], known[::-1]


def _features(clf: Classifier, user: int | None, items: np.ndarray) -> np.ndarray:
    """History features of candidate items after a user's whole dataset history (zeros for an unknown user)."""
    if user is None:
        return np.zeros((len(items), len(HISTORY_FEATURES)))
    end = np.full(len(items), clf.dataset.offsets[user + 1], dtype=np.int64)
    zeros = np.zeros(len(items), dtype=np.int8)
    return clf.features(Examples(np.full(len(items), user, dtype=np.int64), items, end, zeros, zeros))


def _later_note(clf: Classifier, event: LaterEvent) -> str:
    """The history note of a later event, as the dataset's events get theirs (`event_notes`)."""
    spec = clf.spec
    value = math.nan if event.value is None else float(event.value)
    return spec.note(value, event.type, spec.value_positive(value), clf.config.label_words)


# -- re-ranking ----------------------------------------------------------------------------------------


def rerank_probabilities(
    clf: Classifier,
    users: np.ndarray,
    histories: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[B, K] probabilities of candidate items (indices, 0 = padding → probability 0) after right-aligned
    item-index histories [B, L] (0 = padding) of users (indices, -1 unknown).

    `rows` ([B, L] event rows aligned with `histories`, -1 padding; see `lmrec.data.labels.history_rows`) lets
    the history show each event's value ("rated 5, liked") and gives the history features
    (`Classifier.row_features`); without it events are shown without values and the features are zero. Only
    the last `config.history` events are read and each pair is cut to `config.max_length` tokens, so one
    candidate costs one bounded encoder pass.
    """
    histories, candidates = np.asarray(histories), np.asarray(candidates)
    size = clf.config.history
    texts = []
    for b in range(len(histories)):
        keep = np.flatnonzero(histories[b] > 0)[::-1][:size]
        notes = clf.notes[rows[b, keep]].tolist() if rows is not None else [""] * len(keep)
        texts.append(clf.history_text(histories[b, keep].tolist(), notes))
    pairs = np.argwhere(candidates > 0)
    probs = np.zeros(candidates.shape, dtype=np.float64)
    if len(pairs):
        b, k = pairs[:, 0], pairs[:, 1]
        items = candidates[b, k].astype(np.int64)
        if rows is None:
            features = np.zeros((len(items), len(HISTORY_FEATURES)))
        else:
            features = clf.row_features(items, np.asarray(rows)[b])
        with progress_bar(len(items), progress) as bar:
            found, _ = clf.predict_texts(
                [texts[i] for i in b.tolist()],
                [clf.item_texts[i] for i in items.tolist()],
                np.asarray(users, dtype=np.int64)[b],
                items,
                features,
                bar.update,
            )
        probs[b, k] = found
    return probs


def rerank(
    clf: Classifier,
    users: np.ndarray,
    histories: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray | None = None,
    progress: bool = False,
    first_stage: np.ndarray | None = None,
    weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [B, K] reordered, their probabilities); padding goes last.

    Without `weight` the order is the classifier's probability alone; with it, `first_stage + weight *
    logit(p)`, where `first_stage` holds the candidates' [B, K] first-stage scores (e.g. next-item logits).
    """
    candidates = np.asarray(candidates)
    probs = rerank_probabilities(clf, users, histories, candidates, rows, progress)
    order = rerank_order(candidates, probs, first_stage, weight)
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(probs, order, 1)


def rerank_order(
    candidates: np.ndarray, probs: np.ndarray, first_stage: np.ndarray | None = None, weight: float | None = None
) -> np.ndarray:
    """[B, K] positions of the candidates in re-ranked order: by probability alone (no `weight`), or by
    first-stage score + weight x log-odds. With next-item logits as the first stage and weight 1 this
    multiplies the first stage's probability by the classifier's odds (a product of experts); weight 0
    keeps the first stage's order. Padding candidates (0) go last; ties keep the given order."""
    if weight is None:
        keys = np.asarray(probs, dtype=np.float64)
    elif first_stage is None:
        raise ValueError("blending with a weight needs the candidates' first-stage scores")
    else:
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)
        keys = np.asarray(first_stage, dtype=np.float64) + weight * (np.log(clipped) - np.log1p(-clipped))
    keys = np.where(np.asarray(candidates) > 0, keys, -np.inf)
    return np.argsort(-keys, axis=1, kind="stable")
