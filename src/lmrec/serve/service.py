"""The service without HTTP: the served model version, the event store, live histories and the operations
the endpoints call. It loads models from a run or a registry and swaps versions without pausing requests.

A version the source asks for but that cannot be served (it fails to load, or it was trained on another
dataset and swapping catalogues was not allowed) is refused: the current version keeps serving, the
refusal is logged once, /readyz reports it, and it is not tried again until the source changes or a
forced reload asks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lmrec.data.dataset import PreparedDataset
from lmrec.errors import DataError, LmrecError, RunError
from lmrec.inference.onnx import with_backend
from lmrec.inference.recommender import Recommender
from lmrec.registry.feedback import TRACKED, feedback_dir
from lmrec.registry.run import RunDir
from lmrec.registry.versions import ModelRegistry
from lmrec.serve import schemas as s
from lmrec.serve.engine import Engine, Ranked, Unsupported
from lmrec.serve.feedback import FLUSH_INTERVAL, Feedback
from lmrec.serve.live import DEFAULT_CAPACITY, MEMO_MAX_K, LiveHistories
from lmrec.serve.metrics import Metrics
from lmrec.serve.retrieval import EXACT_LIMIT
from lmrec.serve.store import EventStore, StoredEvent, StoredItem
from lmrec.serve.users import matching_users

log = logging.getLogger(__name__)

HISTORY_LIMIT = 1000
DEFAULT_MAX_BODY = 2 * 1024 * 1024
REASON_LIMIT = 300  # characters of an unexpected load error's message kept in a refusal


class Token(NamedTuple):
    """What the service serves or is asked to: a reload is due when any part changes."""

    source: int  # the source's token (registry index or run model file)
    items: tuple[int, int]  # the store's items revision
    version: str  # the version label the source names


class NotFound(LmrecError):
    """A user or item the service does not know."""


class NotConfigured(LmrecError):
    """An endpoint needs something the service was not started with."""


class Refused(LmrecError):
    """The version the source asks for is not served; the current one keeps serving."""


class LoadFailed(Refused):
    """The version the source asks for cannot be read or loaded (a server-side fault, answered with 503)."""


class CatalogueChanged(Refused):
    """The version the source asks for was trained on another dataset, and hot swaps to it are not allowed."""


@dataclass(frozen=True)
class Refusal:
    """A refused version: the source token it was refused at, its label and why."""

    source: int
    version: str
    error: Refused

    def holds(self, token: Token) -> bool:
        """Whether `token` asks for the refused version again with the source unchanged; the items revision
        does not count, so that added items do not load a refused version again."""
        return token.source == self.source and token.version == self.version


class BatchRejected(LmrecError):
    """No event of a batch could be accepted."""

    def __init__(self, rejected: list[s.Rejection]) -> None:
        super().__init__("no event of the batch was accepted; see 'rejected' for the reason of each.")
        self.rejected = rejected


class Answer:
    """A recommendation reply as the JSON an HTTP response carries, encoded once however often it is served,
    and what online feedback tracks of it (the reply with its first `TRACKED` items only), so that a
    remembered answer holds little beyond its JSON."""

    def __init__(self, reply: s.Recommendations) -> None:
        self.body = reply.model_dump_json().encode()
        self.tracked = reply.model_copy(update={"items": reply.items[:TRACKED]})


@dataclass
class ServiceConfig:
    """Everything `lmrec serve` configures."""

    source: Path
    store_url: str | None = None
    api_keys: frozenset[str] = frozenset()
    public_reads: bool = False
    classifier: Path | None = None
    poll_interval: float = 2.0
    history_ttl: float | None = None
    history_capacity: int = DEFAULT_CAPACITY
    exact_limit: int = EXACT_LIMIT
    max_body_bytes: int = DEFAULT_MAX_BODY
    allow_new_catalogue: bool = False  # hot-swap to a version trained on another dataset (else refused)
    feedback_log: Path | None = None  # default: <registry>/feedback/served-<pid>.jsonl on a registry, else none
    feedback_window: int = 1  # a served list unhit after this many later events of its user is a miss
    feedback_flush_interval: float = FLUSH_INTERVAL  # seconds between appends to the feedback log
    backend: str = "torch"  # or "onnx": the run's ONNX export (lmrec export) scores in place of the torch model
    export_dir: Path | None = None  # the export for the onnx backend (default: <served run>/export)


class ModelSource:
    """Where the served model comes from: one run directory, or the promoted version of a registry."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.registry = ModelRegistry(self.path) if ModelRegistry.is_registry(self.path) else None
        if self.registry is None:
            RunDir(self.path).info()  # a clear error when it is neither

    def resolve(self) -> tuple[str, Path]:
        """(version label, run directory) to serve now."""
        if self.registry is None:
            return self.path.name, self.path
        promoted = self.registry.promoted()
        if promoted is None:
            raise RunError(f"registry {self.path} has no promoted version; run `lmrec registry promote VERSION`.")
        return str(promoted.version), promoted.path

    def token(self) -> int:
        """Changes whenever the source may serve something new (the registry index or the run's model file)."""
        watched = self.registry.index_file if self.registry is not None else RunDir(self.path).model_file
        return watched.stat().st_mtime_ns

    def default_store_url(self) -> str:
        """The embedded SQLite store beside the run or registry."""
        return f"sqlite:///{self.path / 'events.sqlite'}"

    def default_feedback_log(self) -> Path | None:
        """A registry's feedback log of this process (one file per process); none for a run."""
        return feedback_dir(self.path) / f"served-{os.getpid()}.jsonl" if self.registry is not None else None


class Service:
    """The state behind the HTTP endpoints; every method is safe to call from several threads."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.source = ModelSource(config.source)
        self.store = EventStore(config.store_url or self.source.default_store_url())
        self.histories = LiveHistories(self.store, capacity=config.history_capacity, ttl=config.history_ttl)
        self.metrics.watch_histories(self.histories)
        self._swap_lock = threading.Lock()
        self._classifier_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._refused: Refusal | None = None
        self._logged: set[str] = set()  # errors logged while serving this version (each once)
        self.engine, self._token = self._load()
        self.metrics.set_model(self.engine.version, self.engine.model_name)
        self.classifier = self._load_classifier(config.classifier) if config.classifier else None
        feedback_log = config.feedback_log or self.source.default_feedback_log()
        self.feedback = Feedback(self.metrics, feedback_log, config.feedback_window, config.feedback_flush_interval)

    # -- versions ---------------------------------------------------------------------------------------

    def _load(self, served: Engine | None = None) -> tuple[Engine, Token]:
        """A fully loaded Engine for what the source serves now, with the store's added items; with a `served`
        engine, a version trained on another dataset is refused unless `allow_new_catalogue`."""
        token = self.source.token()
        revision = self.store.items_revision()
        version, path = self.source.resolve()
        if served is not None and not self.config.allow_new_catalogue:
            self._check_catalogue(served, version, path)
        recommender = with_backend(Recommender.load(path), self.config.backend, self.config.export_dir)
        return self._engine(recommender, version, self.store.items()), Token(token, revision, version)

    def _engine(self, recommender: Recommender, version: str, items: Sequence[StoredItem]) -> Engine:
        return Engine(recommender, version, items, exact_limit=self.config.exact_limit)

    @staticmethod
    def _check_catalogue(served: Engine, version: str, path: Path) -> None:
        """Refuse a version whose run was trained on another dataset than the served one (by fingerprint),
        unless that dataset extends the served one (a retraining snapshot keeps every user and item)."""
        info = RunDir(path).info()
        fingerprint = str(info.get("fingerprint", ""))
        if fingerprint != served.dataset.fingerprint and not _extends(info, served.dataset.fingerprint):
            raise CatalogueChanged(
                f"version {version} was trained on another dataset ({info.get('dataset')}, data "
                f"{fingerprint[:12]}) than the served version {served.version} (data "
                f"{served.dataset.fingerprint[:12]}); a running service does not switch catalogues on its own: "
                "restart it to serve the new catalogue, or start it with --allow-new-catalogue."
            )

    def reload(self, force: bool = False) -> s.Reloaded:
        """Load what the source serves now and swap it in, unless nothing changed (and not forced).

        A refused version raises Refused (LoadFailed or CatalogueChanged) and is remembered: until the source
        changes, a reload raises the same refusal without loading it again, unless `force`.
        """
        with self._swap_lock:
            current = self._current_token()
            if not force and current == self._token:
                return s.Reloaded(model_version=self.engine.version, changed=False)
            refused = self._refused
            if not force and refused is not None and refused.holds(current):
                raise refused.error
            previous = self.engine
            try:
                engine, token = self._load(served=previous)
            except CatalogueChanged as exc:
                raise self._refuse(current, exc) from None
            except Exception as exc:  # whatever breaks a load, the current version keeps serving
                failed = LoadFailed(f"version {current.version} cannot be loaded: {_reason(exc)}")
                raise self._refuse(current, failed) from None
            changed = engine.version != previous.version or token != self._token
            self.engine, self._token, self._refused, self._logged = engine, token, None, set()
            self.metrics.refused.set(0)
        self.metrics.set_model(engine.version, engine.model_name)
        log.info("serving model version %s", engine.version)
        if engine.dataset.fingerprint != previous.dataset.fingerprint:
            grown = engine.dataset.extends(previous.dataset.fingerprint)  # a retraining snapshot: routine, not news
            (log.info if grown else log.warning)(
                "the catalogue %s with version %s: dataset %s (%d items) replaces %s (%d items) of version %s",
                "grew" if grown else "changed", engine.version, engine.dataset.path, engine.n_items,
                previous.dataset.path, previous.n_items, previous.version,
            )  # fmt: skip
        return s.Reloaded(model_version=engine.version, changed=changed)

    def _refuse(self, token: Token, error: Refused) -> Refused:
        """Remember a refusal (to raise), logged in one line the first time for its version and reason."""
        self._refused = Refusal(token.source, token.version, error)
        self.metrics.refused.set(1)
        self._log_once(f"{error} Still serving version {self.engine.version}.")
        return error

    def _log_once(self, message: str, traceback: bool = False) -> None:
        """Log an error unless it was logged while serving this version: a watcher meets the same errors every
        interval, maybe in turn (an unreadable index, then the refused version), and each is one line."""
        if message not in self._logged:
            log.error("%s", message, exc_info=traceback)
            self._logged.add(message)

    def _current_token(self) -> Token:
        """What the source serves now; LoadFailed when the source (registry index, run) cannot be read."""
        try:
            return Token(self.source.token(), self.store.items_revision(), self.source.resolve()[0])
        except Exception as exc:
            error = LoadFailed(f"cannot tell which version to serve: {_reason(exc)}")
            self._log_once(f"{error} Still serving version {self.engine.version}.")
            raise error from None

    def readiness(self) -> s.Status:
        """ok when the served version is the one the source asks for, else degraded with the reason."""
        served = self.engine.version
        try:
            wanted = self.source.resolve()[0]
        except Exception as exc:  # an unreadable registry is a reason to report, never a 500
            return s.Status(status="degraded", model_version=served, detail=_reason(exc))
        refused = self._refused
        if refused is not None and refused.version == wanted:
            detail: str | None = str(refused.error)
        elif wanted != served:
            detail = f"version {wanted} is promoted but not loaded yet; POST /v1/admin/reload loads it now."
        else:
            return s.Status(status="ok", model_version=served, promoted_version=wanted)
        return s.Status(status="degraded", model_version=served, promoted_version=wanted, detail=detail)

    def start_watching(self) -> None:
        """Poll the source and the store's items every `poll_interval` seconds and reload on change."""
        if self._watcher is None and self.config.poll_interval > 0:
            self._watcher = threading.Thread(target=self._watch, name="lmrec-reload", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.reload()
            except Refused:
                pass  # logged once by reload; the current version keeps serving
            except Exception:  # a bug must not stop the watcher either; its traceback is logged once
                self._log_once(f"reload failed unexpectedly; still serving version {self.engine.version}.", True)

    def close(self) -> None:
        """Stop watching, write the buffered feedback log and close the store."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.feedback.close()
        self.store.close()

    # -- events -----------------------------------------------------------------------------------------

    def post_events(self, batch: s.EventBatch, key: str | None, body_hash: str) -> s.EventsAccepted:
        """Validate each event, commit the accepted ones (once per idempotency key), update live histories."""
        accepted: list[s.CleanEvent] = []
        rejected: list[s.Rejection] = []
        for index, event in enumerate(batch.events):
            checked = s.check_event(event)
            if isinstance(checked, str):
                rejected.append(s.Rejection(index=index, reason=checked))
            else:
                accepted.append(checked)
        if not accepted:
            self.metrics.events.labels("rejected").inc(len(rejected))
            raise BatchRejected(rejected)
        item_index = self.engine.item_index
        reply = s.EventsAccepted(
            accepted=len(accepted),
            rejected=rejected,
            unknown_items=sum(e.item_id not in item_index for e in accepted),
        )
        result = self.store.append(accepted, reply.model_dump(mode="json"), key, body_hash)
        self.histories.add(result.events)
        if result.replayed:
            self.metrics.events.labels("replayed").inc(len(accepted))
            return s.EventsAccepted(**{**result.response, "replayed": True})
        self.feedback.observe(result.events)
        self.metrics.events.labels("accepted").inc(reply.accepted)
        self.metrics.events.labels("rejected").inc(len(rejected))
        self.metrics.events.labels("unknown_item").inc(reply.unknown_items)
        return reply

    # -- recommendations --------------------------------------------------------------------------------

    def recommend_user(
        self,
        user_id: str,
        k: int,
        exclude_seen: bool,
        explain: bool,
        exclude: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> Answer:
        """Top-k for a user from their live sequence, or popularity when they have no usable history; the
        answer (and its JSON) is remembered until one of the user's events arrives or the model changes."""
        engine = self.engine
        entry = self.histories.get(user_id)
        request = (
            "recommend",
            k,
            exclude_seen,
            explain,
            tuple(exclude),
            None if candidates is None else tuple(candidates),
        )

        def answer(events: list[StoredEvent]) -> Answer:
            live = entry.remembered(engine, "live", lambda _: engine.live_sequence(user_id, events))
            return Answer(self._recommend(
                engine, user_id, live.items, live.unknown, k, exclude_seen, explain, exclude, candidates
            ))  # fmt: skip

        if k > MEMO_MAX_K:  # long lists (re-ranking pipelines) are computed each time: memos stay small
            answered = answer(entry.events)
            self.metrics.replies.labels("computed").inc()
        else:
            self.metrics.replies.labels("cached" if entry.remembers(engine, request) else "computed").inc()
            answered = entry.remembered(engine, request, answer)
        if answered.tracked.fallback is not None:
            self.metrics.fallbacks.inc()
        self.feedback.served(answered.tracked, engine.n_items)
        return answered

    def recommend_session(self, request: s.SessionRequest) -> s.Recommendations:
        """Top-k for an anonymous session given its item ids."""
        engine = self.engine
        items, unknown = engine.indices(request.item_ids)
        reply = self._recommend(
            engine, None, items, len(unknown), request.k, request.exclude_seen, request.explain,
            request.exclude, request.candidates,
        )  # fmt: skip
        self.metrics.replies.labels("computed").inc()
        if reply.fallback is not None:
            self.metrics.fallbacks.inc()
        return reply

    def _recommend(
        self,
        engine: Engine,
        user_id: str | None,
        history: np.ndarray,
        unknown: int,
        k: int,
        exclude_seen: bool,
        explain: bool,
        exclude: Sequence[str],
        candidates: Sequence[str] | None,
    ) -> s.Recommendations:
        blocked, _ = engine.indices(exclude)
        chosen, skipped = engine.indices(candidates) if candidates is not None else (None, [])
        if len(history):
            ranked = engine.recommend(history, k, exclude_seen, explain, blocked, chosen)
            fallback = None
        else:
            ranked = engine.popular(k, blocked, chosen)
            fallback = "popularity"
        return s.Recommendations(
            user_id=user_id,
            model_version=engine.version,
            fallback=fallback,
            history_length=len(history),
            unknown_items=unknown,
            skipped_candidates=skipped,
            items=[self._item(engine, r, explain) for r in ranked],
        )

    @staticmethod
    def _item(engine: Engine, ranked: Ranked, explain: bool) -> s.RecommendedItem:
        because = None
        if explain:
            because = [s.Influence(item_id=e.item_id, title=e.title, weight=e.weight) for e in ranked.because or []]
        return s.RecommendedItem(
            item_id=engine.item_ids[ranked.item], title=engine.title(ranked.item), score=ranked.score, because=because
        )

    def similar(self, item_id: str, k: int) -> s.SimilarItems:
        """Items nearest to one item by cosine over the model's output item embeddings."""
        engine = self.engine
        item = engine.item_index.get(item_id)
        if item is None:
            raise NotFound(f"unknown item {item_id!r}: not in the catalogue of model version {engine.version}.")
        items = [
            s.SimilarItem(item_id=engine.item_ids[r.item], title=engine.title(r.item), score=r.score)
            for r in engine.similar(item, k)
        ]
        return s.SimilarItems(item_id=item_id, model_version=engine.version, items=items)

    # -- users ------------------------------------------------------------------------------------------

    def history(self, user_id: str) -> s.History:
        """The user's most recent events (training data, then stored), at most 1,000, oldest first."""
        engine = self.engine
        dataset = [
            s.HistoryEvent(item_id=i, title=_title(engine, i), type=None, timestamp=t, value=None, source="dataset")
            for i, t in engine.dataset_events(user_id)[-(HISTORY_LIMIT + 1) :]
        ]
        stored = [
            s.HistoryEvent(
                item_id=e.item_id,
                title=_title(engine, e.item_id),
                type=e.type,
                timestamp=e.timestamp,
                value=e.value,
                source="stored",
            )
            for e in self.store.user_events(user_id, limit=HISTORY_LIMIT + 1)
            if e.id > engine.dataset.events_through  # a retraining snapshot lists the earlier ones already
        ]
        events = dataset + stored
        if not events:
            raise NotFound(f"unknown user {user_id!r}: no events in the training data or the store.")
        return s.History(user_id=user_id, events=events[-HISTORY_LIMIT:], truncated=len(events) > HISTORY_LIMIT)

    def users(self, prefix: str, limit: int) -> s.UserList:
        """Up to `limit` user ids starting with `prefix`, from the served dataset and the store (the page's picker)."""
        users, truncated = matching_users(self.engine.dataset, self.store, prefix, limit)
        return s.UserList(users=users, truncated=truncated)

    def erase(self, user_id: str) -> s.Erased:
        """Delete the user's stored events; they stop influencing recommendations at once."""
        deleted = self.store.delete_user(user_id)
        self.histories.forget(user_id)
        self.feedback.forget(user_id)
        if not deleted and user_id not in self.engine.dataset.user_index:
            raise NotFound(f"unknown user {user_id!r}: no stored events to erase.")
        return s.Erased(user_id=user_id, deleted=deleted)

    # -- items and classifier ---------------------------------------------------------------------------

    def add_items(self, batch: s.ItemBatch) -> s.ItemsStored:
        """Store items with text and serve a model version that can recommend them (lmrec models only)."""
        if not self.engine.accepts_items:
            raise Unsupported(
                f"model {self.engine.model_name} scores items by learned ID embeddings only, so it cannot score "
                "new items; serve an lmrec model (lmrec train --model lmrec) to add items by their text."
            )
        for item in batch.items:
            problem = s.text_problem(item.text, "text", allowed="\n\r\t")
            if problem:
                raise s.InvalidInput(problem)
        latest = {item.item_id: StoredItem(item.item_id, item.text, item.title) for item in batch.items}
        with self._swap_lock:
            served = self.engine  # rebuilt with the items: never a version the source asks for but is not served
            known = served.item_index
            merged = {i.item_id: i for i in self.store.items()} | latest
            engine = self._engine(served.recommender, served.version, sorted(merged.values(), key=lambda i: i.item_id))
            self.store.upsert_items(list(latest.values()))
            self.engine, self._token = engine, self._token._replace(items=self.store.items_revision())
        added = sum(item_id not in known for item_id in latest)
        return s.ItemsStored(added=added, updated=len(latest) - added, model_version=engine.version)

    @staticmethod
    def _load_classifier(run: Path):
        from lmrec.inference.classifier import load_run

        return load_run(run)

    def predict(self, request: s.PredictRequest) -> s.Predictions:
        """Probabilities of the classifier's behaviour for a user and items, after the user's live history
        (the classifier's dataset, then every stored event), like every other endpoint."""
        from lmrec.errors import DataError
        from lmrec.inference.classifier import predict_user

        if self.classifier is None:
            raise NotConfigured("no behaviour classifier is configured; start the service with --classifier RUN.")
        stored = self.histories.get(request.user_id).events
        with self._classifier_lock:
            try:
                predictions = predict_user(self.classifier, request.user_id, request.item_ids, stored)
            except DataError as exc:
                raise NotFound(str(exc)) from None
        return s.Predictions(
            user_id=request.user_id,
            label=self.classifier.config.label,
            predictions=[
                s.Prediction(item_id=p.item_id, title=p.title, probability=p.probability, seen=p.seen)
                for p in predictions
            ],
        )


def _title(engine: Engine, item_id: str) -> str:
    """An item's display title, or its id when the served catalogue does not know it."""
    item = engine.item_index.get(item_id)
    return item_id if item is None else engine.title(item)


def _reason(exc: Exception) -> str:
    """An error's sentence: an LmrecError's own, else its type and the first line of its message (cut)."""
    if isinstance(exc, LmrecError):
        return str(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {first[:REASON_LIMIT]}" if first else exc.__class__.__name__


def _extends(info: dict, fingerprint: str) -> bool:
    """Whether a run's dataset is a retraining snapshot that keeps the users and items of `fingerprint`."""
    try:
        return PreparedDataset.load(info.get("dataset", "")).extends(fingerprint)
    except (DataError, OSError):
        return False
