"""Live histories stay exact when a cache miss reads the store while a batch is being committed, and what is
remembered from them (replies) lasts exactly until the user's events or the served version change."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from serve_helpers import AUTH

from lmrec.serve.live import MEMO_KEYS, MEMO_MAX_K, LiveHistories, UserEvents
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


def test_a_memo_lasts_until_the_events_or_the_owner_change(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    histories = LiveHistories(store)
    store.append(events("a"), {})
    calls: list[int] = []

    def count(evs: list[StoredEvent]) -> int:
        calls.append(len(evs))
        return len(evs)

    owner, other = object(), object()
    assert histories.get(USER).remembered(owner, "n", count) == 1
    assert histories.get(USER).remembered(owner, "n", count) == 1 and calls == [1]
    assert histories.get(USER).remembered(other, "n", count) == 1 and calls == [1, 1]  # a new model version
    histories.add(store.append(events("a", "b"), {}).events)
    assert histories.get(USER).remembered(other, "n", count) == 3 and calls == [1, 1, 3]
    store.close()


def test_a_memo_keeps_the_latest_keys_and_nothing_computed_while_events_arrived() -> None:
    entry, owner = UserEvents(ready=True), object()
    for key in range(MEMO_KEYS + 2):
        entry.remembered(owner, key, lambda evs, key=key: key)
    assert sorted(entry.memos) == list(range(2, MEMO_KEYS + 2))

    def racing(evs: list[StoredEvent]) -> str:
        entry.changed([StoredEvent(9, USER, "z", "view", 1.0, None)])  # an event arrives meanwhile
        return "stale"

    assert entry.remembered(owner, "late", racing) == "stale"  # answered, but not remembered
    assert not entry.remembers(owner, "late") and entry.memos == {}


def test_repeated_requests_are_answered_from_the_memo_until_an_event_arrives(client: TestClient) -> None:
    service = client.app.state.service
    user = next(iter(service.engine.dataset.user_index))
    url, params = f"/v1/users/{user}/recommendations", {"k": 5, "explain": "true"}
    first = client.get(url, params=params, headers=AUTH).json()
    assert client.get(url, params=params, headers=AUTH).json() == first
    assert client.get(url, params={"k": 4}, headers=AUTH).json()["items"][0]["because"] is None  # another request
    replies = service.metrics.replies
    assert replies.labels("cached")._value.get() == 1 and replies.labels("computed")._value.get() == 2
    event = {"user_id": user, "item_id": first["items"][0]["item_id"], "type": "view", "timestamp": 1_900_000_000}
    assert client.post("/v1/events", json={"events": [event]}, headers=AUTH).status_code == 200
    after = client.get(url, params=params, headers=AUTH).json()
    assert after["history_length"] == first["history_length"] + 1 and after["items"] != first["items"]
    assert replies.labels("computed")._value.get() == 3


def test_long_lists_are_computed_every_time(client: TestClient) -> None:
    service = client.app.state.service
    user = next(iter(service.engine.dataset.user_index))
    replies = [
        client.get(f"/v1/users/{user}/recommendations", params={"k": MEMO_MAX_K + 1}, headers=AUTH) for _ in "ab"
    ]
    assert replies[0].json() == replies[1].json() and len(replies[0].json()["items"]) > 10
    assert service.metrics.replies.labels("computed")._value.get() == 2
    assert service.metrics.replies.labels("cached")._value.get() == 0
