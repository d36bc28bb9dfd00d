"""A service on a registry serves the promoted version, switches without dropping requests, and refuses
versions it cannot serve (corrupt, or trained on another dataset) while saying so."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH, ServerProcess

import lmrec
from lmrec.cli import main
from lmrec.registry.versions import ModelRegistry
from lmrec.serve.service import LoadFailed, Refused
from lmrec.serve.store import StoredItem


@pytest.fixture(scope="module")
def shared_registry(prepared: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """Version 1: the tiny SASRec (promoted); version 2: a popularity model on the same data."""
    root = tmp_path_factory.mktemp("reg")
    lmrec.train(prepared, root / "pop", model="pop")
    registry = ModelRegistry(root / "registry")
    registry.add(tiny_run, promote=True)
    registry.add(root / "pop")
    return registry


@pytest.fixture
def registry(shared_registry: ModelRegistry) -> ModelRegistry:
    """The module's registry with version 1 promoted, whatever an earlier test left promoted (even a
    version on another dataset), so that each test starts from the same state."""
    shared_registry.promote(1, allow_new_catalogue=True)
    return shared_registry


@pytest.fixture(scope="module")
def corrupt(shared_registry: ModelRegistry, tiny_run: Path) -> int:
    """A version whose model.pt is damaged (cut in half)."""
    version = shared_registry.add(tiny_run)
    checkpoint = version.path / "model" / "model.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    return version.version


@pytest.fixture(scope="module")
def other_dataset(shared_registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A popularity version trained on another dataset (another data fingerprint)."""
    root = tmp_path_factory.mktemp("other")
    main(["data", "synth", "--users", "50", "--items", "30", "--events", "900", "--out", str(root / "log.csv")])
    main(["data", "prepare", str(root / "log.csv"), "--out", str(root / "d")])
    lmrec.train(root / "d", root / "pop", model="pop")
    return shared_registry.add(root / "pop").version


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def served(client: TestClient) -> tuple[str, str]:
    reply = client.get("/v1/users/u000001/recommendations", params={"k": 3}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()["model_version"], client.app.state.service.engine.model_name


def test_admin_reload_switches_to_the_promoted_version(
    registry: ModelRegistry, make_client: Callable[..., TestClient]
) -> None:
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


def test_a_promoted_version_that_is_not_loaded_yet_is_reported(
    registry: ModelRegistry, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(source=registry.root)
    assert client.get("/readyz").json() == {"status": "ok", "model_version": "1", "promoted_version": "1",
                                            "detail": None}  # fmt: skip
    registry.promote(2)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["promoted_version"] == "2" and "not loaded yet" in ready.json()["detail"]
    client.post("/v1/admin/reload", headers=AUTH)
    assert client.get("/readyz").json()["status"] == "ok"


def test_a_corrupt_version_is_refused_reported_and_logged_once(
    registry: ModelRegistry, corrupt: int, make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lmrec.serve.service")
    with make_client(source=registry.root, poll_interval=0.02) as client:
        registry.promote(corrupt)
        wait_for(lambda: client.get("/readyz").json()["status"] == "degraded")
        time.sleep(0.5)  # about 25 more polls
        ready = client.get("/readyz").json()
        assert ready["model_version"] == "1" and ready["promoted_version"] == str(corrupt)
        assert f"version {corrupt} cannot be loaded" in ready["detail"] and "corrupt" in ready["detail"]
        assert served(client) == ("1", "sasrec")
        for params in ({}, {"force": "true"}):
            reply = client.post("/v1/admin/reload", params=params, headers=AUTH)
            assert reply.status_code == 503 and reply.json()["detail"] == ready["detail"]
        assert "lmrec_model_refused 1.0" in client.get("/metrics").text
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert not errors[0].exc_info and "\n" not in errors[0].getMessage()
        assert "still serving version 1" in errors[0].getMessage().lower()
        registry.promote(1)
        assert client.get("/readyz").json()["status"] == "ok"  # the served version is promoted again
        wait_for(lambda: "lmrec_model_refused 0.0" in client.get("/metrics").text)


def test_a_version_on_another_dataset_is_not_hot_swapped_unless_allowed(
    registry: ModelRegistry,
    other_dataset: int,
    make_client: Callable[..., TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(source=registry.root)
    allowing = make_client(source=registry.root, allow_new_catalogue=True)
    registry.promote(other_dataset, allow_new_catalogue=True)
    reply = client.post("/v1/admin/reload", headers=AUTH)
    assert reply.status_code == 409, reply.text
    assert "another dataset" in reply.json()["detail"] and "--allow-new-catalogue" in reply.json()["detail"]
    assert served(client) == ("1", "sasrec")
    ready = client.get("/readyz").json()
    assert ready["status"] == "degraded" and ready["promoted_version"] == str(other_dataset)
    assert ready["detail"] == reply.json()["detail"]

    caplog.set_level(logging.INFO, logger="lmrec.serve.service")
    assert allowing.post("/v1/admin/reload", headers=AUTH).json() == {"model_version": str(other_dataset),
                                                                      "changed": True}  # fmt: skip
    assert served(allowing) == (str(other_dataset), "pop")
    assert any("catalogue changed" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_lmrec_serve_allow_new_catalogue(
    registry: ModelRegistry, other_dataset: int, server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    process = server(str(registry.root), "--store", f"sqlite:///{tmp_path / 'e.sqlite'}", "--allow-new-catalogue")
    registry.promote(other_dataset, allow_new_catalogue=True)
    reply = httpx.post(f"{process.url}/v1/admin/reload", headers=AUTH, timeout=30)
    assert reply.status_code == 200 and reply.json()["model_version"] == str(other_dataset), reply.text


def test_an_unreadable_registry_is_reported_not_a_client_error(
    tiny_run: Path, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    registry = ModelRegistry(tmp_path / "r")
    registry.add(tiny_run, promote=True)
    client = make_client(source=registry.root)
    registry.index_file.write_text("{broken")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded" and "corrupt" in ready.json()["detail"]
    reply = client.post("/v1/admin/reload", headers=AUTH)
    assert reply.status_code == 503 and "cannot tell which version to serve" in reply.json()["detail"]
    assert served(client) == ("1", "sasrec")


@pytest.mark.parametrize("refused", ["corrupt", "other_dataset"])
def test_a_refused_version_is_not_loaded_again_when_items_change(
    registry: ModelRegistry, make_client: Callable[..., TestClient], request: pytest.FixtureRequest, refused: str
) -> None:
    version = request.getfixturevalue(refused)
    service = make_client(source=registry.root).app.state.service
    attempts: list[object] = []
    load = service._load

    def counted(*args, **kwargs):
        attempts.append(args)
        return load(*args, **kwargs)

    service._load = counted
    registry.promote(version, allow_new_catalogue=True)
    with pytest.raises(Refused):
        service.reload()
    for n in range(3):
        service.store.upsert_items([StoredItem(f"new-{n}", "a new item", None)])  # e.g. another replica's write
        with pytest.raises(Refused):
            service.reload()  # what the watcher does every interval
    assert len(attempts) == 1
    with pytest.raises(Refused):
        service.reload(force=True)
    assert len(attempts) == 2


def test_alternating_errors_are_each_logged_once(
    tiny_run: Path, tmp_path: Path, make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(tmp_path / "r")
    registry.add(tiny_run, promote=True)
    corrupt = registry.add(tiny_run)
    (corrupt.path / "model" / "model.pt").write_bytes(b"not a checkpoint")
    service = make_client(source=registry.root).app.state.service
    registry.promote(corrupt.version)
    index = registry.index_file.read_bytes()
    caplog.set_level(logging.INFO, logger="lmrec.serve.service")
    for _ in range(3):
        with pytest.raises(LoadFailed, match=f"version {corrupt.version} cannot be loaded"):
            service.reload()
        registry.index_file.write_text("{broken")
        with pytest.raises(LoadFailed, match="cannot tell which version to serve"):
            service.reload()
        registry.index_file.write_bytes(index)  # readable again: the registry changed, so the version is tried again
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
