"""Live histories stay exact when a cache miss reads the store while a batch is being committed."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from serve_helpers import AUTH

from lmrec.serve.live import LiveHistories
from lmrec.serve.schemas import CleanEvent
from lmrec.serve.store import Appended, EventStore, StoredEvent

USER = "racing-user"


def events(*items: str) -> list[CleanEvent]:
    return [CleanEvent(USER, item, "view", 1_800_000_000.0 + i, None) for i, item in enumerate(items)]


def test_events_read_by_a_miss_are_not_added_twice(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    histories = LiveHistories(store)
    committed = store.append(events("a", "b", "c"), {}).events
    assert [e.id for e in histories.get(USER).events] == [1, 2, 3]  # the miss already sees the commit
    histories.add(committed)  # the write-through that follows the commit
    histories.add(committed[1:])  # and a repeated one changes nothing either
    assert [e.id for e in histories.get(USER).events] == [1, 2, 3]
    store.close()


def test_batches_committed_while_a_miss_reads_are_merged_once(tmp_path: Path) -> None:
    """The write-throughs that arrive while a miss reads the store: one of a batch the read already saw,
    one of a later batch (twice); each event is cached once, in time order, and nothing new changes nothing."""
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    histories = LiveHistories(store)
    first = store.append(events("a", "b"), {}).events
    read = store.user_events

    def read_then_commit(user_id: str, limit: int | None = None) -> list[StoredEvent]:
        rows = read(user_id, limit=limit)
        later = store.append([CleanEvent(USER, "c", "view", 1_700_000_000.0, None)], {}).events
        histories.add([*first, *later, *later])
        return rows

    store.user_events = read_then_commit
    entry = histories.get(USER)
    assert [e.id for e in entry.events] == [3, 1, 2]  # "c" is the oldest
    before = entry.events
    histories.add(first)
    assert histories.get(USER).events is before
    store.close()


def test_a_miss_between_commit_and_cache_update_leaves_one_copy(client: TestClient) -> None:
    """Forces the interleaving of two requests: a recommendation misses the cache right after the commit."""
    service = client.app.state.service
    append = service.store.append

    def append_then_read(*args, **kwargs) -> Appended:
        result = append(*args, **kwargs)
        service.histories.get(USER)  # a concurrent request's cache miss, before post_events updates the cache
        return result

    service.store.append = append_then_read
    batch = [{"user_id": USER, "item_id": e.item_id, "type": "view", "timestamp": e.timestamp}
             for e in events("i000001", "i000002", "i000003")]  # fmt: skip
    assert client.post("/v1/events", json={"events": batch}, headers=AUTH).status_code == 200
    assert [e.id for e in service.histories.get(USER).events] == [1, 2, 3]
    reply = client.get(f"/v1/users/{USER}/recommendations", headers=AUTH).json()
    assert reply["history_length"] + reply["unknown_items"] == 3
