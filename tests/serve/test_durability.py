"""Durability: SIGKILL the server while batches are in flight; every acknowledged event is stored exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serve_helpers import AUTH, ServerProcess

from lmrec.serve.store import EventStore

BATCH = 10
SENDERS = 6
KILL_AFTER = 15


def batch(number: int) -> list[dict]:
    return [
        {"user_id": f"d{number % 5}", "item_id": f"b{number}-e{j}", "type": "view", "timestamp": 1_900_000_000 + j}
        for j in range(BATCH)
    ]


async def send_until_killed(server: ServerProcess) -> tuple[set[int], set[int]]:
    """Post numbered batches from concurrent senders; SIGKILL the server after KILL_AFTER acknowledgements.

    Returns (acknowledged batch numbers, batches that were sent but not acknowledged).
    """
    acked: set[int] = set()
    unacked: set[int] = set()
    counter = iter(range(10_000))
    killed = asyncio.Event()

    async def sender(client: httpx.AsyncClient) -> None:
        while not killed.is_set():
            number = next(counter)
            try:
                reply = await client.post(
                    "/v1/events", json={"events": batch(number)}, headers={**AUTH, "Idempotency-Key": f"k{number}"}
                )
                assert reply.status_code == 200, reply.text
                acked.add(number)
            except httpx.HTTPError:
                unacked.add(number)
                return
            if len(acked) >= KILL_AFTER and not killed.is_set():
                killed.set()
                server.process.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        await asyncio.wait_for(asyncio.gather(*(sender(client) for _ in range(SENDERS))), timeout=60)
    return acked, unacked


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    return request.getfixturevalue("pg_url")


def test_acknowledged_batches_survive_sigkill(
    tiny_run: Path, store_url: str, server: Callable[..., ServerProcess]
) -> None:
    first = server(str(tiny_run), "--store", store_url)
    acked, unacked = asyncio.run(send_until_killed(first))
    first.process.wait(timeout=10)
    assert first.process.returncode == -signal.SIGKILL and len(acked) >= KILL_AFTER and unacked

    store = EventStore(store_url)
    counts = Counter(e.item_id for e in store.all_events())
    for number in acked:
        assert all(counts[f"b{number}-e{j}"] == 1 for j in range(BATCH)), f"acknowledged batch {number} was lost"
    assert max(counts.values()) == 1
    sent = acked | unacked
    assert {int(item.split("-")[0][1:]) for item in counts} <= sent

    second = server(str(tiny_run), "--store", store_url)  # retry the unacknowledged batches with their keys
    with httpx.Client(base_url=second.url, timeout=10.0) as client:
        for number in sorted(unacked):
            reply = client.post("/v1/events", json={"events": batch(number)},
                                headers={**AUTH, "Idempotency-Key": f"k{number}"})  # fmt: skip
            assert reply.status_code == 200 and reply.json()["accepted"] == BATCH
    counts = Counter(e.item_id for e in store.all_events())
    assert len(counts) == BATCH * len(sent) and set(counts.values()) == {1}
    store.close()
