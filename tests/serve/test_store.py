"""The event store on SQLite and a real PostgreSQL: migrations, durability settings, idempotency, live histories."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from lmrec.errors import LmrecError
from lmrec.serve import migrations
from lmrec.serve.live import LiveHistories
from lmrec.serve.schemas import CleanEvent
from lmrec.serve.store import EventStore, IdempotencyConflict, StoredItem, StoreError, engine_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    return request.getfixturevalue("pg_url")


def events(user: str, n: int, start: float = 0.0) -> list[CleanEvent]:
    return [CleanEvent(user, f"i{k}", "view", start + k, None) for k in range(n)]


def test_migrations_are_versioned_and_resume_from_an_old_schema(store_url: str) -> None:
    engine = create_engine(engine_url(store_url))
    with engine.begin() as conn:  # a store written by a release that knew only the first step
        migrations._version_table(migrations.MetaData()).create(conn)
        migrations.MIGRATIONS[0](conn)
        conn.execute(text(f"INSERT INTO {migrations.VERSION_TABLE} (version, applied_at) VALUES (1, 0)"))
    assert "lmrec_items" not in inspect(engine).get_table_names()
    store = EventStore(store_url)
    assert store.schema_version == len(migrations.MIGRATIONS) == 2
    with engine.connect() as conn:
        versions = conn.execute(text(f"SELECT version FROM {migrations.VERSION_TABLE} ORDER BY version")).scalars()
        assert list(versions) == [1, 2]
    assert "lmrec_items" in inspect(engine).get_table_names()
    assert EventStore(store_url).schema_version == 2  # opening again applies nothing
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {migrations.VERSION_TABLE} (version, applied_at) VALUES (99, 0)"))
    with pytest.raises(LmrecError, match="newer than this lmrec"):
        EventStore(store_url)
    store.close()
    engine.dispose()


def test_append_is_idempotent_per_key_and_ordered_per_user(store_url: str) -> None:
    store = EventStore(store_url)
    first = store.append(events("u", 3, 10.0), {"accepted": 3}, key="k", body_hash="h")
    assert not first.replayed and [e.id for e in first.events] == sorted(e.id for e in first.events)
    again = store.append(events("u", 3, 10.0), {"accepted": 3}, key="k", body_hash="h")
    assert again.replayed and again.response == {"accepted": 3} and again.events == []
    with pytest.raises(IdempotencyConflict):
        store.append(events("u", 1), {}, key="k", body_hash="other")
    store.append([CleanEvent("u", "early", "view", 1.0, 2.5)], {})
    assert [e.item_id for e in store.user_events("u")] == ["early", "i0", "i1", "i2"]
    assert [e.item_id for e in store.user_events("u", limit=2)] == ["i1", "i2"]
    assert store.user_events("u")[0].value == 2.5
    assert store.delete_user("u") == 4 and store.user_events("u") == []
    store.close()


def test_concurrent_writers_with_one_key_store_the_batch_once(store_url: str) -> None:
    store = EventStore(store_url)
    replies = []

    def write() -> None:
        replies.append(store.append(events("c", 5), {"accepted": 5}, key="same", body_hash="h").replayed)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replies) == [False, True, True, True, True, True]
    assert len(store.all_events()) == 5
    store.close()


def test_items_have_revisions(store_url: str) -> None:
    store = EventStore(store_url)
    assert store.items_revision() == (0, 0)
    store.upsert_items([StoredItem("a", "text a", None), StoredItem("b", "text b", "B")])
    store.upsert_items([StoredItem("a", "new text a", "A")])
    assert store.items() == [StoredItem("a", "new text a", "A"), StoredItem("b", "text b", "B")]
    assert store.items_revision() == (2, 2)
    store.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "sqlite:///:memory:", "::not a url::"])
def test_unusable_store_urls_are_one_sentence(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        engine_url(url)


def test_live_histories_merge_writes_that_race_a_load(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    histories = LiveHistories(store, capacity=2)
    store.append(events("u", 2, 100.0), {})
    loading = threading.Event()
    release = threading.Event()
    original = store.user_events

    def slow_user_events(user_id: str, limit: int | None = None):
        rows = original(user_id, limit)
        loading.set()
        release.wait(5)
        return rows

    store.user_events = slow_user_events
    result = {}
    loader = threading.Thread(target=lambda: result.setdefault("entry", histories.get("u")))
    loader.start()
    loading.wait(5)
    committed = store.append([CleanEvent("u", "late", "view", 50.0, None)], {})  # committed after the read
    histories.add(committed.events)
    release.set()
    loader.join()
    store.user_events = original
    assert [e.item_id for e in histories.get("u").events] == ["late", "i0", "i1"]
    histories.add(store.append([CleanEvent("u", "next", "view", 200.0, None)], {}).events)
    assert [e.item_id for e in histories.get("u").events] == ["late", "i0", "i1", "next"]
    histories.get("v")
    histories.get("w")
    assert len(histories) == 2  # the LRU evicted u
    store.close()
