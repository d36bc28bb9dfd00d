"""Retraining from the live event store: a snapshot, a warm-started candidate, a promotion gate.

One round (`retrain`):
1. **Snapshot**: the promoted version's dataset plus every store event it does not hold yet (ids above
   its `events_through`), prepared by the same reader and cleaning as `lmrec data prepare` (duplicates,
   invalid rows, repeats as the parent was prepared); new users and items get ids, new items their text
   from the store (`POST /v1/items`). The split is by time over the new events: the most recent
   `holdout` share is the gate's window, the `valid` share before it stops training early, and
   everything earlier trains. The snapshot records its lineage (`lineage.json`): the preparations whose
   users and items it keeps, and the last store id it holds, so the service does not add those events twice.
2. **Candidate**: the promoted version's model and settings, warm-started (item rows matched by original
   id) and fine-tuned within the given budget (`--set train.max_seconds=…`, `train.epochs=…`).
3. **Gate**: candidate and current version rank every event of the holdout window, which neither
   trained on, with the history before it; the candidate is promoted only when the lower end of the
   paired 95% interval of ΔNDCG@10 (resampling users) is above `margin`. Registered either way, with the
   reason; the registry index changes once, atomically, so a retrain killed at any point leaves the
   registry (and the services on it) as they were.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.atomic import atomic_write_json
from lmrec.config import build_config
from lmrec.data.dataset import LINEAGE, PreparedDataset
from lmrec.errors import ConfigError, DataError, RunError
from lmrec.evaluation.catalogue import MappedCatalogue
from lmrec.evaluation.evaluator import Evaluator
from lmrec.evaluation.stats import paired_test
from lmrec.locks import file_lock
from lmrec.registry.run import RunDir
from lmrec.registry.versions import ModelRegistry, ModelVersion
from lmrec.serve.store import EventStore, StoredEvent, StoredItem
from lmrec.training.runs import train
from lmrec.training.warm import item_map

log = logging.getLogger(__name__)

ROUNDS = "rounds"  # under the registry: one folder per round, its snapshot (data/) and candidate run (run/)
METRIC = "ndcg@10"


@dataclass(frozen=True)
class RetrainOptions:
    """Settings of one retraining round."""

    holdout: float = 0.2  # share of the new events (the most recent) that only the gate sees
    valid: float = 0.1  # share of the new events before the holdout that stops training early
    margin: float = 0.0  # ΔNDCG@10 the candidate's paired lower bound must exceed
    min_events: int = 100  # fewer new events than this: nothing to retrain on yet
    overrides: tuple[str, ...] = ()  # config changes for the candidate (budget, learning rate, ...)
    from_scratch: bool = False  # train the candidate from a fresh initialisation instead of warm-starting
    seed: int | None = None
    resamples: int = 1000

    def check(self) -> None:
        """Refuse shares that leave no training or no gate window."""
        if not (0 < self.holdout < 1 and 0 < self.valid < 1 and self.holdout + self.valid < 1):
            raise ConfigError(
                f"--holdout ({self.holdout}) and --valid ({self.valid}) must be shares in (0, 1) that sum below 1."
            )
        if self.min_events < 1:
            raise ConfigError(f"--min-events must be at least 1, got {self.min_events}.")


@dataclass
class RetrainResult:
    """What one round did: skipped (with why), or the candidate version and the gate's decision."""

    parent: int
    skipped: str = ""
    version: int | None = None
    promoted: bool = False
    gate: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record of the round."""
        return {k: v for k, v in self.__dict__.items() if v not in ("", None, {})} | {"promoted": self.promoted}


def retrain(registry: str | Path, store: str, options: RetrainOptions | None = None) -> RetrainResult:
    """Run one retraining round on `registry` from the events of the store at `store` (a URL)."""
    options = options or RetrainOptions()
    options.check()
    reg = ModelRegistry(registry)
    busy = RunError(f"another retrain is running on registry {reg.root}; wait for it or let it finish.")
    with file_lock(reg.root / ".retrain.lock", wait=0, busy=lambda: busy):
        _clean_leftovers(reg)
        return _round(reg, EventStore(store), options)


def _round(reg: ModelRegistry, store: EventStore, options: RetrainOptions) -> RetrainResult:
    current = reg.promoted()
    if current is None:
        raise RunError(f"registry {reg.root} has no promoted version to retrain; promote one first.")
    parent = PreparedDataset.load(_dataset_of(current))
    started = time.perf_counter()
    try:
        new = store.events_after(parent.events_through)
        items = store.items()
    finally:
        store.close()
    result = RetrainResult(parent=current.version)
    if len(new) < options.min_events:
        result.skipped = f"{len(new)} new events since version {current.version} (fewer than {options.min_events})"
        return result
    folder = reg.root / ROUNDS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    snapshot, candidate = folder / "data", folder / "run"
    try:
        lineage = _snapshot(parent, current, new, items, options, folder / "input", snapshot)
        result.seconds["snapshot"] = time.perf_counter() - started
        _train_candidate(current, snapshot, candidate, options)
        result.seconds["train"] = time.perf_counter() - started - result.seconds["snapshot"]
        gate = _gate(current, candidate, snapshot, options)
        version = reg.add(candidate, promote=gate["promoted"], lineage=lineage, gate=gate)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing registered refers to it
        raise
    result.version, result.promoted, result.gate, result.lineage = version.version, gate["promoted"], gate, lineage
    result.seconds["total"] = time.perf_counter() - started
    log.info("retrain: version %d %s (%s)", version.version, "promoted" if result.promoted else "kept", gate["reason"])
    return result


def _dataset_of(version: ModelVersion) -> Path:
    """The prepared dataset a version was trained on; it must still exist to be extended."""
    path = Path(version.dataset)
    if not (path / "manifest.json").is_file():
        raise DataError(
            f"the dataset of version {version.version} is gone ({path}); a retrain extends it, so restore it "
            "(or register a version trained on a dataset that exists)."
        )
    return path


def _clean_leftovers(reg: ModelRegistry) -> None:
    """Remove the folders of rounds that were killed before registering (no version's dataset is theirs)."""
    used = {Path(v.dataset).resolve().parent for v in reg.versions()}
    for folder in sorted((reg.root / ROUNDS).glob("*")):
        if folder.resolve() not in used:
            shutil.rmtree(folder, ignore_errors=True)


# -- the snapshot -------------------------------------------------------------------------------------


def _snapshot(
    parent: PreparedDataset,
    current: ModelVersion,
    new: list[StoredEvent],
    items: list[StoredItem],
    options: RetrainOptions,
    work: Path,
    out: Path,
) -> dict[str, Any]:
    """Prepare the parent's events plus the new ones into `out`; returns the lineage written beside it."""
    from lmrec.data.prepare import prepare

    work.mkdir(parents=True, exist_ok=True)
    events, texts = work / "events.parquet", work / "items.parquet"
    pq.write_table(_events_table(parent, new), events)
    pq.write_table(_items_table(parent, items), texts)
    holdout_from, valid_from = _cutoffs(np.array([e.timestamp for e in new]), options)
    opts = parent.manifest.get("options", {})
    prepare(
        events,
        out,
        items=texts,
        items_id_col="item_id",
        text_columns=("item_text",),
        keep_repeats=bool(opts.get("keep_repeats", False)),
        tie_break=opts.get("tie_break", "row"),
        split="temporal",
        cutoff=holdout_from,
        valid_cutoff=valid_from,
        name=f"{parent.name}+{len(new)}",
    )
    shutil.rmtree(work)  # the prepared snapshot holds all it needs
    lineage = {
        "parent_version": current.version,
        "parent_fingerprint": parent.fingerprint,
        "extends": [*parent.lineage.get("extends", []), parent.fingerprint],
        "events_through": max(e.id for e in new),
        "events_used": len(new),
        "holdout_from": holdout_from,
        "valid_from": valid_from,
    }
    atomic_write_json(out / LINEAGE, lineage)
    return {**lineage, "snapshot": PreparedDataset.load(out).fingerprint}


def _events_table(parent: PreparedDataset, new: list[StoredEvent]) -> pa.Table:
    """Every event of the parent preparation (original ids) followed by the store's new ones."""
    users = np.repeat(np.arange(parent.n_users), parent.lengths)
    return pa.table(
        {
            "user_id": [*parent.user_ids[users].astype(str).tolist(), *(e.user_id for e in new)],
            "item_id": [*parent.item_ids[parent.items].astype(str).tolist(), *(e.item_id for e in new)],
            "timestamp": np.concatenate([parent.timestamps, [e.timestamp for e in new]]).astype(np.float64),
        }
    )


def _items_table(parent: PreparedDataset, stored: list[StoredItem]) -> pa.Table:
    """The parent's item texts, replaced or extended by the texts items were given through the service."""
    texts = dict(zip(parent.item_ids[1:].astype(str).tolist(), parent.item_text[1:], strict=True))
    texts.update({item.item_id: item.text for item in stored})
    return pa.table({"item_id": list(texts), "item_text": list(texts.values())})


def _cutoffs(times: np.ndarray, options: RetrainOptions) -> tuple[float, float]:
    """(start of the holdout window, start of the validation window) as times of the new events."""
    ordered = np.sort(times)
    n = len(ordered)
    holdout = ordered[min(n - 1, int(n * (1 - options.holdout)))]
    valid = ordered[min(n - 1, int(n * (1 - options.holdout - options.valid)))]
    if not valid < holdout:
        raise DataError(
            f"the {n} new events do not span enough time to hold out {options.holdout:.0%} and validate on "
            f"{options.valid:.0%} of them (their times coincide); wait for more events."
        )
    return float(holdout), float(valid)


# -- the candidate and the gate ----------------------------------------------------------------------


def _train_candidate(current: ModelVersion, snapshot: Path, out: Path, options: RetrainOptions) -> None:
    """Fine-tune the promoted version's model on the snapshot (warm-started unless `from_scratch`)."""
    config = build_config(None, RunDir(current.path).config_file, list(options.overrides), options.seed)
    warm = None if options.from_scratch else current.path
    train(snapshot, out, config=config, warm_start=warm)


def _gate(current: ModelVersion, candidate: Path, snapshot: Path, options: RetrainOptions) -> dict[str, Any]:
    """Compare candidate and current version on the holdout window with a paired test."""
    dataset = PreparedDataset.load(snapshot)
    evaluator = Evaluator(dataset, "test", ks=(10,))
    new_model = RunDir(candidate).load_model(dataset.fingerprint)
    old_run = RunDir(current.path)
    old_ids = PreparedDataset.load(_dataset_of(current)).item_ids
    old_model = MappedCatalogue(
        old_run.load_model(old_run.info().get("fingerprint")), item_map(old_ids, dataset.item_ids)
    )
    ours, theirs = evaluator(new_model), evaluator(old_model)
    deltas = ours.per_example(METRIC) - theirs.per_example(METRIC)
    test = paired_test(deltas, n_resamples=options.resamples, groups=ours.users)
    promoted = bool(test.low > options.margin)
    reason = (
        f"Δ{METRIC} {test.delta:+.4f} [{test.low:+.4f}, {test.high:+.4f}] "
        + ("above" if promoted else "not above")
        + f" the margin {options.margin:+.4f}"
    )
    return {
        "metric": METRIC,
        "window": {"from": float(dataset.lineage["holdout_from"]), "events": len(deltas)},
        "candidate": ours.metrics[METRIC],
        "current": theirs.metrics[METRIC],
        "delta": test.delta,
        "ci95": [test.low, test.high],
        "p_value": test.p_value,
        "margin": options.margin,
        "promoted": promoted,
        "reason": reason,
    }


def retrain_every(
    registry: str | Path,
    store: str,
    every: float,
    options: RetrainOptions | None = None,
    rounds: int | None = None,
    on_round: Any = None,
) -> int:
    """Retrain every `every` seconds (`rounds` times, or until interrupted); returns the rounds run.

    A round that fails is logged and the loop goes on (the registry is as it was); `on_round` receives each
    round's result or exception, for the command line to print.
    """
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        try:
            outcome: RetrainResult | Exception = retrain(registry, store, options)
        except (RunError, DataError, ConfigError) as exc:
            log.warning("retrain round failed, the registry is unchanged: %s", exc)
            outcome = exc
        done += 1
        if on_round is not None:
            on_round(outcome)
        if rounds is not None and done >= rounds:
            break
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return done
