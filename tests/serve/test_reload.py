"""A service on a registry serves the promoted version and switches without dropping requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH

import lmrec
from lmrec.registry.versions import ModelRegistry


@pytest.fixture(scope="module")
def registry(prepared: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """Version 1: the tiny SASRec (promoted); version 2: a popularity model on the same data."""
    root = tmp_path_factory.mktemp("reg")
    lmrec.train(prepared, root / "pop", model="pop")
    registry = ModelRegistry(root / "registry")
    registry.add(tiny_run, promote=True)
    registry.add(root / "pop")
    return registry


def served(client: TestClient) -> tuple[str, str]:
    reply = client.get("/v1/users/u000001/recommendations", params={"k": 3}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()["model_version"], client.app.state.service.engine.model_name


def test_admin_reload_switches_to_the_promoted_version(
    registry: ModelRegistry, make_client: Callable[..., TestClient]
) -> None:
    registry.promote(1)
    client = make_client(source=registry.root)
    assert served(client) == ("1", "sasrec")
    assert client.post("/v1/admin/reload", headers=AUTH).json() == {"model_version": "1", "changed": False}
    registry.promote(2)
    assert client.post("/v1/admin/reload", headers=AUTH).json() == {"model_version": "2", "changed": True}
    assert served(client) == ("2", "pop")
    registry.rollback()
    assert client.post("/v1/admin/reload", headers=AUTH).json()["model_version"] == "1"
    assert 'lmrec_model_info{model="sasrec",version="1"} 1.0' in client.get("/metrics").text


def test_the_watcher_follows_the_index_without_dropping_requests(
    registry: ModelRegistry, make_client: Callable[..., TestClient]
) -> None:
    registry.promote(1)
    with make_client(source=registry.root, poll_interval=0.05) as client:  # `with` runs the lifespan (watcher)
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                reply = client.get("/v1/users/u000002/recommendations", params={"k": 5}, headers=AUTH)
                statuses.append(reply.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in threads:
            thread.start()
        seen = set()
        for version in (2, 1, 2):
            registry.promote(version)
            deadline = time.monotonic() + 20
            while served(client)[0] != str(version) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.add(served(client)[0])
        stop.set()
        for thread in threads:
            thread.join()
    assert seen == {"1", "2"}
    assert statuses and set(statuses) == {200}


def test_a_registry_without_promotion_is_a_clear_error(tmp_path: Path, tiny_run: Path) -> None:
    from lmrec.errors import RunError
    from lmrec.serve.service import ModelSource

    ModelRegistry(tmp_path / "r").add(tiny_run)
    with pytest.raises(RunError, match="no promoted version"):
        ModelSource(tmp_path / "r").resolve()
