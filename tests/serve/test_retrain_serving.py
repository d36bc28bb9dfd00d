"""A service on a registry follows `lmrec retrain`: the retrained version extends its catalogue, so it is
swapped in without --allow-new-catalogue and without a failed request, and no stored event is counted twice."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH

from lmrec.data.dataset import PreparedDataset
from lmrec.registry.versions import ModelRegistry
from lmrec.training.retrain import RetrainOptions, retrain

OPTIONS = RetrainOptions(overrides=("train.epochs=1",), min_events=10, margin=-1.0)  # margin -1: always promote


def post_events(client: TestClient, dataset: PreparedDataset, users: int = 30, steps: int = 6) -> int:
    """Each of the first `users` users views `steps` catalogue items after everything in the dataset."""
    start = float(dataset.timestamps.max()) + 60
    events = [
        {"user_id": str(dataset.user_ids[u]), "item_id": str(dataset.item_ids[(u * 5 + k) % dataset.n_items + 1]),
         "type": "view", "timestamp": start + 10 * k + u}
        for u in range(users)
        for k in range(steps)
    ]  # fmt: skip
    events.append({"user_id": "someone-new", "item_id": str(dataset.item_ids[1]), "type": "view", "timestamp": start})
    reply = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert reply.status_code == 200 and reply.json()["accepted"] == len(events), reply.text
    return len(events)


@pytest.fixture
def registry(tiny_run: Path, tmp_path: Path) -> ModelRegistry:
    """A registry whose promoted version 1 is a copy of the tiny SASRec run."""
    shutil.copytree(tiny_run, tmp_path / "run")
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tmp_path / "run", promote=True)
    return registry


def history_sources(client: TestClient, user: str) -> list[str]:
    reply = client.get(f"/v1/users/{user}/history", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return [event["source"] for event in reply.json()["events"]]


def test_a_retrained_version_is_served_without_a_failed_request_or_a_doubled_event(
    registry: ModelRegistry, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'live.sqlite'}"
    with make_client(source=registry.root, store_url=store, poll_interval=0.05) as client:
        dataset = client.app.state.service.engine.dataset
        user = str(dataset.user_ids[0])
        posted = post_events(client, dataset)
        before = history_sources(client, user)
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                statuses.append(client.get(f"/v1/users/{user}/recommendations", headers=AUTH).status_code)

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            result = retrain(registry.root, store, OPTIONS)
            deadline = time.monotonic() + 30
            while client.app.state.service.engine.version != "2":
                assert time.monotonic() < deadline, client.get("/readyz").json()
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert result.promoted and result.lineage["events_used"] == posted
        assert statuses and set(statuses) == {200}
        after = history_sources(client, user)
        assert len(after) == len(before) and after.count("stored") == 0  # the snapshot holds them now
        reply = client.get("/v1/users/someone-new/recommendations", headers=AUTH).json()
        assert reply["model_version"] == "2" and reply["fallback"] is None  # a user the snapshot knows


def test_retraining_reads_a_postgresql_store(
    registry: ModelRegistry, make_client: Callable[..., TestClient], pg_url: str
) -> None:
    client = make_client(source=registry.root, store_url=pg_url)
    posted = post_events(client, client.app.state.service.engine.dataset)
    result = retrain(registry.root, pg_url, OPTIONS)
    assert result.version == 2 and result.lineage["events_used"] == posted
    assert PreparedDataset.load(registry.get(2).dataset).events_through == result.lineage["events_through"]
    assert retrain(registry.root, pg_url, OPTIONS).skipped.startswith("0 new events since version 2")
