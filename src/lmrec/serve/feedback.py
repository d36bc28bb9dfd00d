"""Online feedback: whether the users' next events hit what the service recommended them, per model version.

Tracked: each list the model answers for a user id (`GET /v1/users/{id}/recommendations`); not anonymous
sessions (no later events can be tied to them) and not popularity fallbacks (they are not the model's
ranking). Its first TRACKED item ids wait, in memory, for that user's next events (a bounded LRU of users,
a few lists per user). When the service accepts events, each waiting list of their users is checked against
them in arrival order (by timestamp within a batch): the first event whose item is in the list is a hit at
that item's rank for the list's version; a list still unhit after `window` events (default 1, "the next
event") is a miss. Either way the Prometheus counters of its version count it, and a `served` and a
`resolved` record are appended to a buffer that a background thread writes to the feedback log as JSON
lines (see lmrec.registry.feedback), one append per flush, never one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmrec.errors import LmrecError
from lmrec.registry.feedback import RANKS, TRACKED, Record, Resolved, Served, gain
from lmrec.serve.metrics import Metrics
from lmrec.serve.schemas import Recommendations
from lmrec.serve.store import StoredEvent

log = logging.getLogger(__name__)

MAX_USERS = 100_000  # users with waiting lists (the least recently served are dropped first)
MAX_PENDING = 4  # waiting lists per user (the oldest dropped first)
MAX_VERSIONS = 8  # versions whose distinct recommended items are kept for the coverage gauge
FLUSH_INTERVAL = 1.0  # seconds between writes of the feedback log
FLUSH_SIZE = 1_000  # buffered records that wake the writer before the interval
MAX_BUFFER = 100_000  # buffered records beyond which new ones are dropped (and counted) until a write


@dataclass
class Pending:
    """A served list waiting for its user's next events."""

    version: str
    items: tuple[str, ...]
    left: int  # events still to come before it resolves as a miss

    def resolve(self, items: Sequence[str]) -> tuple[bool, int | None]:
        """(resolved, rank of the hit) after the user's next event items; each non-hit uses up one event."""
        for item in items:
            if item in self.items:
                return True, self.items.index(item) + 1
            self.left -= 1
            if self.left == 0:
                return True, None
        return False, None


class FeedbackLog:
    """Records buffered in memory and appended to a JSON-lines file by a background thread."""

    def __init__(self, path: Path, metrics: Metrics, interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.metrics = metrics
        self.interval = interval
        self._buffer: list[Record] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time, so lines keep their order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="lmrec-feedback-log", daemon=True)
        self._thread.start()

    def append(self, record: Record) -> None:
        """Buffer a record (the only cost on the request path); dropped and counted when the buffer is full."""
        with self._lock:
            if len(self._buffer) >= MAX_BUFFER:
                self.metrics.feedback_log_dropped.inc()
                return
            self._buffer.append(record)
            full = len(self._buffer) >= FLUSH_SIZE
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as lines in one append (nothing when none are buffered)."""
        with self._write_lock:
            with self._lock:
                records, self._buffer = self._buffer, []
            if records:
                self._write("".join(f"{record.line()}\n" for record in records).encode(), len(records))

    def _write(self, data: bytes, count: int) -> None:
        """Append to the log, opened for each flush so that a log moved away (rotated) is created again."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                handle.write(data)
        except OSError as exc:
            self.metrics.feedback_log_dropped.inc(count)
            if not self._failing:
                log.error("cannot write the feedback log %s (%s); its records are dropped and counted", self.path,
                          exc.strerror or exc.__class__.__name__)  # fmt: skip
            self._failing = True
            return
        self._failing = False

    def close(self) -> None:
        """Stop the writer and write what is still buffered."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


class Feedback:
    """Waiting lists per user, resolved by the users' next events into per-version counters and log records."""

    def __init__(
        self,
        metrics: Metrics,
        log_path: Path | str | None = None,
        window: int = 1,
        interval: float = FLUSH_INTERVAL,
        max_users: int = MAX_USERS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if window < 1:
            raise LmrecError(f"the feedback window must be at least 1 event, not {window}.")
        self.metrics = metrics
        self.window = window
        self.max_users = max_users
        self.max_pending = max_pending
        self._pending: OrderedDict[str, list[Pending]] = OrderedDict()
        self._covered: OrderedDict[str, set[str]] = OrderedDict()  # version -> distinct recommended items
        self._lock = threading.Lock()
        self.log = FeedbackLog(Path(log_path), metrics, interval) if log_path is not None else None

    def served(self, reply: Recommendations, catalogue: int) -> None:
        """Track a list answered for a user by the model (anonymous sessions and fallbacks are not tracked)."""
        items = tuple(item.item_id for item in reply.items[:TRACKED])
        if reply.user_id is None or reply.fallback is not None or not items:
            return
        version = reply.model_version
        with self._lock:
            dropped = self._wait(reply.user_id, Pending(version, items, self.window))
            covered = self._cover(version, items)
        self.metrics.online_served.labels(version).inc()
        self.metrics.online_coverage.labels(version, str(TRACKED)).set(covered / max(catalogue, 1))
        self._dropped(dropped)
        if self.log is not None:
            self.log.append(Served(time.time(), version, reply.user_id, items, catalogue))

    def _wait(self, user_id: str, pending: Pending) -> list[Pending]:
        """Queue a list for its user (most recently served users last); the lists dropped to stay in bounds."""
        lists = self._pending.pop(user_id, [])
        lists.append(pending)
        dropped = lists[: -self.max_pending]
        self._pending[user_id] = lists[-self.max_pending :]
        while len(self._pending) > self.max_users:
            dropped.extend(self._pending.popitem(last=False)[1])
        return dropped

    def _cover(self, version: str, items: tuple[str, ...]) -> int:
        """Add a list's items to its version's distinct items; how many that version has now."""
        if version not in self._covered:
            self._start(version)
        covered = self._covered.pop(version, set())
        covered.update(items)
        self._covered[version] = covered
        while len(self._covered) > MAX_VERSIONS:
            self._covered.popitem(last=False)
        return len(covered)

    def _start(self, version: str) -> None:
        """Create a version's series at zero, so that its HR@k reads 0 (not absent) before a first hit."""
        self.metrics.online_resolved.labels(version)
        self.metrics.online_gain.labels(version, str(TRACKED))
        for k in RANKS:
            self.metrics.online_hits.labels(version, str(k))

    def observe(self, events: Sequence[StoredEvent]) -> None:
        """Check the waiting lists of the events' users against those events, oldest first."""
        by_user: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        outcomes: list[Resolved] = []
        with self._lock:
            for user_id, new in by_user.items():
                if user_id in self._pending:
                    items = [e.item_id for e in sorted(new, key=lambda e: (e.timestamp, e.id))]
                    outcomes.extend(self._resolve(user_id, items))
        for outcome in outcomes:
            self._count(outcome)

    def _resolve(self, user_id: str, items: list[str]) -> list[Resolved]:
        """The outcomes of a user's waiting lists that these event items resolve; the others keep waiting."""
        now, outcomes, waiting = time.time(), [], []
        for pending in self._pending[user_id]:
            resolved, rank = pending.resolve(items)
            if resolved:
                outcomes.append(Resolved(now, pending.version, rank))
            else:
                waiting.append(pending)
        if waiting:
            self._pending[user_id] = waiting
        else:
            del self._pending[user_id]
        return outcomes

    def _count(self, outcome: Resolved) -> None:
        """Count a resolved list in its version's counters and log it."""
        version, rank = outcome.version, outcome.rank
        self.metrics.online_resolved.labels(version).inc()
        if rank is not None:
            self.metrics.online_gain.labels(version, str(TRACKED)).inc(gain(rank))
            for k in RANKS:
                if rank <= k:
                    self.metrics.online_hits.labels(version, str(k)).inc()
        if self.log is not None:
            self.log.append(outcome)

    def forget(self, user_id: str) -> None:
        """Drop a user's waiting lists (their events were erased)."""
        with self._lock:
            dropped = self._pending.pop(user_id, [])
        self._dropped(dropped)

    def _dropped(self, lists: list[Pending]) -> None:
        for pending in lists:
            self.metrics.online_dropped.labels(pending.version).inc()

    def flush(self) -> None:
        """Write the buffered log records now."""
        if self.log is not None:
            self.log.flush()

    def close(self) -> None:
        """Stop the log writer after writing what is buffered (waiting lists are not persisted)."""
        if self.log is not None:
            self.log.close()
