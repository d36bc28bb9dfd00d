"""Live histories: each user's stored events, cached in memory (LRU) and updated as batches commit, with what
was computed from them (the live sequence, the latest replies) until they change.

A miss reads the user's events from the store once; after that, committed batches are merged into the
cached entry (write-through), so a recommendation needs no database round trip. Merges are idempotent by
event id: an entry that is still loading collects the events committed meanwhile, and a load that already
read a batch between its commit and its write-through does not get it twice, so a load racing a write
never caches a stale or doubled history. With several processes writing (workers, replicas), entries also expire
after `ttl` seconds to pick up the others' writes.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lmrec.serve.store import EventStore, StoredEvent

DEFAULT_CAPACITY = 100_000
MAX_EVENTS_PER_USER = 10_000
MEMO_KEYS = 4  # distinct requests (k, options) remembered per user
MEMO_MAX_K = 100  # longer lists are not remembered, so a cached user's memos stay a few kB of JSON


def _key(event: StoredEvent) -> tuple[float, int]:
    return (event.timestamp, event.id)


def _holds(events: list[StoredEvent], event: StoredEvent) -> bool:
    """Whether time-ordered `events` already hold `event` (the same store id)."""
    at = bisect.bisect_left(events, _key(event), key=_key)
    return at < len(events) and events[at].id == event.id


def _merged(events: list[StoredEvent], new: Iterable[StoredEvent], limit: int) -> list[StoredEvent] | None:
    """Time-ordered `events` with those of `new` they do not hold yet (each once), the latest `limit` of
    them; None when nothing is new. Only then is the list copied: readers may be converting the old one."""
    fresh = {event.id: event for event in new if not _holds(events, event)}
    if not fresh:
        return None
    merged = list(events)
    for event in fresh.values():
        bisect.insort(merged, event, key=_key)
    return merged[-limit:]


@dataclass
class UserEvents:
    """One user's stored events in time order (ties by arrival), and memos of what was computed from them."""

    events: list[StoredEvent] = field(default_factory=list)
    ready: bool = False
    loaded_at: float = 0.0
    pending: list[StoredEvent] = field(default_factory=list)
    owner: Any = None
    memos: dict[Hashable, Any] = field(default_factory=dict)

    def remembered(self, owner: Any, key: Hashable, compute: Callable[[list[StoredEvent]], Any]) -> Any:
        """`compute(events)`, remembered under `key` for `owner` (one loaded model version) until the events
        change or another owner asks; the latest `MEMO_KEYS` keys are kept.

        A user's recommendations change only when one of their events arrives (or the model changes), so a
        repeated request is answered from here. A value computed while an event arrived is returned, not kept.
        """
        events, memos = self.events, self.memos
        if self.owner is owner and key in memos:
            return memos[key]
        value = compute(events)
        if self.events is events:
            if self.owner is not owner:
                self.owner, self.memos = owner, {}
            while len(self.memos) >= MEMO_KEYS:
                del self.memos[next(iter(self.memos))]
            self.memos[key] = value
        return value

    def remembers(self, owner: Any, key: Hashable) -> bool:
        """Whether `remembered(owner, key, ...)` would answer from its memo now."""
        return self.owner is owner and key in self.memos

    def changed(self, events: list[StoredEvent]) -> None:
        """Replace the events and drop every memo of the old ones."""
        self.events, self.memos = events, {}


class LiveHistories:
    """An LRU of users' stored events over an EventStore, kept current by `add` and `forget`."""

    def __init__(
        self,
        store: EventStore,
        capacity: int = DEFAULT_CAPACITY,
        ttl: float | None = None,
        max_events: int = MAX_EVENTS_PER_USER,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.ttl = ttl
        self.max_events = max_events
        self._entries: OrderedDict[str, UserEvents] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str) -> UserEvents:
        """The user's stored events (the most recent `max_events`), from memory when cached."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and entry.ready and not self._expired(entry):
                self._entries.move_to_end(user_id)
                return entry
            entry = UserEvents()
            self._entries[user_id] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        rows = self.store.user_events(user_id, limit=self.max_events)
        with self._lock:
            merged = _merged(rows, entry.pending, self.max_events)  # events committed while the rows were read
            entry.events = rows if merged is None else merged
            entry.pending = []
            entry.loaded_at = time.monotonic()
            entry.ready = True
        return entry

    def add(self, events: Iterable[StoredEvent]) -> None:
        """Merge committed events into the cached entries of their users (others load them when needed)."""
        by_user: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        with self._lock:
            for user_id, new in by_user.items():
                entry = self._entries.get(user_id)
                if entry is None:
                    continue
                if not entry.ready:
                    entry.pending.extend(new)
                    continue
                merged = _merged(entry.events, new, self.max_events)
                if merged is not None:
                    entry.changed(merged)

    def forget(self, user_id: str) -> None:
        """Drop a user's entry after their events were erased (a load in flight is not cached either)."""
        with self._lock:
            self._entries.pop(user_id, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def _expired(self, entry: UserEvents) -> bool:
        return self.ttl is not None and time.monotonic() - entry.loaded_at > self.ttl
