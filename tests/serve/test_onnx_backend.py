"""The service with the ONNX Runtime backend (`lmrec serve RUN --backend onnx`) answers as the torch backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH

import lmrec
from lmrec.errors import RunError
from lmrec.inference.onnx import OnnxModel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def export_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx-export") / "export"
    lmrec.export(tiny_run, out)
    return out


def top(client: TestClient, user: str, **params) -> list[str]:
    response = client.get(f"/v1/users/{user}/recommendations", params={"k": 10, **params}, headers=AUTH)
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


@pytest.mark.parametrize("exact_limit", [None, 10], ids=["exact", "faiss"])
def test_onnx_backend_recommends_as_torch(
    make_client: Callable[..., TestClient], export_dir: Path, exact_limit: int | None
) -> None:
    limit = {} if exact_limit is None else {"exact_limit": exact_limit}
    torch_client = make_client(**limit)
    onnx_client = make_client(backend="onnx", export_dir=export_dir, **limit)
    assert isinstance(onnx_client.app.state.service.engine.model, OnnxModel)
    users = [str(u) for u in onnx_client.app.state.service.engine.dataset.user_ids[:40]]
    for user in users:
        assert top(onnx_client, user) == top(torch_client, user)
    assert top(onnx_client, users[0], exclude_seen="false") == top(torch_client, users[0], exclude_seen="false")
    session = {"item_ids": top(torch_client, users[1])[:3], "k": 5}
    answers = [c.post("/v1/recommendations", json=session, headers=AUTH).json() for c in (torch_client, onnx_client)]
    assert [i["item_id"] for i in answers[0]["items"]] == [i["item_id"] for i in answers[1]["items"]]
    similar = [c.get(f"/v1/items/{session['item_ids'][0]}/similar", headers=AUTH) for c in (torch_client, onnx_client)]
    assert similar[0].json()["items"] == similar[1].json()["items"]


def test_explanations_need_the_torch_model(make_client: Callable[..., TestClient], export_dir: Path) -> None:
    client = make_client(backend="onnx", export_dir=export_dir)
    user = str(client.app.state.service.engine.dataset.user_ids[0])
    reply = client.get(f"/v1/users/{user}/recommendations", params={"explain": "true"}, headers=AUTH)
    assert reply.status_code == 409
    assert "explanations need the torch model" in reply.json()["detail"]


def test_a_missing_export_stops_the_service(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    with pytest.raises(RunError, match="holds no ONNX export"):
        make_client(backend="onnx", export_dir=tmp_path / "none")
