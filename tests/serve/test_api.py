"""The HTTP API over a tiny SASRec run: live updates, idempotency, history, erasure, fallbacks, auth, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH, KEY

from lmrec.config import EXCLUDE_SEEN_DEFAULT
from lmrec.data.dataset import PreparedDataset

NOW = 1_800_000_000


def users_and_items(client: TestClient) -> tuple[list[str], list[str]]:
    """Original user and item ids of the served dataset."""
    dataset = client.app.state.service.engine.dataset
    return [str(u) for u in dataset.user_ids], [str(i) for i in dataset.item_ids[1:]]


def recs(client: TestClient, user: str, **params) -> dict:
    response = client.get(f"/v1/users/{user}/recommendations", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def post(client: TestClient, events: list[dict], key: str | None = None, headers: dict | None = None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/events", json={"events": events}, headers={**AUTH, **extra, **(headers or {})})


def event(user: str, item: str, ts: int | str = NOW, **extra) -> dict:
    return {"user_id": user, "item_id": item, "type": "view", "timestamp": ts, **extra}


def stored(client: TestClient) -> list[tuple[str, str, float]]:
    return [(e.user_id, e.item_id, e.timestamp) for e in client.app.state.service.store.all_events()]


def test_a_posted_event_changes_the_next_recommendations(client: TestClient) -> None:
    users, _ = users_and_items(client)
    before = recs(client, users[0], k=10, exclude_seen="true")
    top = before["items"][0]["item_id"]
    assert before["fallback"] is None and len(before["items"]) == 10
    response = post(client, [event(users[0], top)])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    after = recs(client, users[0], k=10, exclude_seen="true")
    assert after["history_length"] == before["history_length"] + 1
    assert top not in [i["item_id"] for i in after["items"]]
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    kept = recs(client, users[0], k=10, exclude_seen="false")
    assert any(i["item_id"] == top for i in kept["items"]) or kept["items"] != after["items"]


def test_exclude_seen_defaults_to_the_shared_setting(client: TestClient) -> None:
    users, _ = users_and_items(client)
    default = recs(client, users[1], k=5)
    explicit = recs(client, users[1], k=5, exclude_seen=str(EXCLUDE_SEEN_DEFAULT).lower())
    assert default["items"] == explicit["items"]


def test_exclude_candidates_and_explanations(client: TestClient) -> None:
    users, items = users_and_items(client)
    base = recs(client, users[2], k=5)
    first = base["items"][0]["item_id"]
    without = recs(client, users[2], k=5, exclude=f"{first},nonexistent")
    assert first not in [i["item_id"] for i in without["items"]]
    chosen = [*items[:4], "nonexistent"]
    ranked = recs(client, users[2], k=10, candidates=",".join(chosen), exclude_seen="false")
    assert {i["item_id"] for i in ranked["items"]} == set(items[:4])
    assert ranked["skipped_candidates"] == ["nonexistent"]
    explained = recs(client, users[2], k=3, explain="true")
    assert all(item["because"] for item in explained["items"])
    history = {e["item_id"] for e in client.get(f"/v1/users/{users[2]}/history", headers=AUTH).json()["events"]}
    assert all(b["item_id"] in history and b["weight"] > 0 for i in explained["items"] for b in i["because"])
    engine = client.app.state.service.engine
    because = [b for item in explained["items"] for b in item["because"]]
    assert all(b["title"] == engine.title(engine.item_index[b["item_id"]]) for b in because)
    assert all([b["weight"] for b in i["because"]] == sorted([b["weight"] for b in i["because"]], reverse=True)
               for i in explained["items"])  # fmt: skip


def test_explanation_titles_are_plain_json_text(make_client: Callable[..., TestClient], monkeypatch) -> None:
    monkeypatch.setattr(
        PreparedDataset, "item_title", lambda self, item: f"<script>alert('{self.item_ids[item]}')</script>"
    )
    client = make_client()
    users, _ = users_and_items(client)
    reply = client.get(f"/v1/users/{users[2]}/recommendations", params={"k": 3, "explain": "true"}, headers=AUTH)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    because = [b for item in reply.json()["items"] for b in item["because"]]
    assert because and all(b["title"] == f"<script>alert('{b['item_id']}')</script>" for b in because)
    assert "<script>alert(" in reply.text  # JSON text as it is: neither HTML-escaped nor dropped
    history = [b["item_id"] for b in because[:2]]
    session = client.post("/v1/recommendations", json={"item_ids": history, "k": 2, "explain": True}, headers=AUTH)
    assert all(b["title"] == f"<script>alert('{b['item_id']}')</script>"
               for item in session.json()["items"] for b in item["because"])  # fmt: skip


def test_unknown_users_get_popularity_and_unknown_items_are_counted(client: TestClient) -> None:
    _, items = users_and_items(client)
    fresh = recs(client, "brand-new-user", k=5)
    assert fresh["fallback"] == "popularity" and len(fresh["items"]) == 5
    scores = [i["score"] for i in fresh["items"]]
    assert scores == sorted(scores, reverse=True)
    reply = post(client, [event("brand-new-user", "never-heard-of-it"), event("brand-new-user", items[3])]).json()
    assert reply["accepted"] == 2 and reply["unknown_items"] == 1
    live = recs(client, "brand-new-user", k=5)
    assert live["fallback"] is None and live["history_length"] == 1 and live["unknown_items"] == 1
    only_unknown = post(client, [event("ghost", "never-heard-of-it")]).json()
    assert only_unknown["unknown_items"] == 1
    assert recs(client, "ghost", k=3)["fallback"] == "popularity"


def test_session_recommendations_match_the_user_endpoint(client: TestClient) -> None:
    users, _ = users_and_items(client)
    history = [e["item_id"] for e in client.get(f"/v1/users/{users[3]}/history", headers=AUTH).json()["events"]]
    body = {"item_ids": [*history, "unknown-x"], "k": 7}
    session = client.post("/v1/recommendations", json=body, headers=AUTH).json()
    user = recs(client, users[3], k=7)
    assert session["items"] == user["items"] and session["unknown_items"] == 1 and session["user_id"] is None
    empty = client.post("/v1/recommendations", json={"item_ids": []}, headers=AUTH).json()
    assert empty["fallback"] == "popularity"


def test_idempotency_key_stores_a_retried_batch_once(client: TestClient) -> None:
    users, items = users_and_items(client)
    batch = [event(users[0], items[0]), event(users[0], items[1], ts="2027-01-01T00:00:00+02:00")]
    first = post(client, batch, key="batch-1")
    again = post(client, batch, key="batch-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == {**first.json(), "replayed": True}
    assert len(stored(client)) == 2
    conflict = post(client, batch[:1], key="batch-1")
    assert conflict.status_code == 422 and "Idempotency-Key" in conflict.json()["detail"]
    assert len(stored(client)) == 2
    assert post(client, batch).status_code == 200 and len(stored(client)) == 4


def test_per_event_rejections_are_explained(client: TestClient) -> None:
    users, items = users_and_items(client)
    batch = [
        event(users[0], items[0]),
        event(users[0], items[0], ts="last tuesday"),
        event("", items[0]),
        event(users[0], items[0], ts=-5),
        event(users[0], "x" * 300),
        event(users[0], "bad\x00id"),
        event(users[0], items[0], ts=10**30),
    ]
    reply = post(client, batch)
    assert reply.status_code == 200
    body = reply.json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    reasons = " ".join(r["reason"] for r in body["rejected"])
    assert "ISO-8601" in reasons and "empty" in reasons and "longer than" in reasons and "control" in reasons
    assert len(stored(client)) == 1
    nothing = post(client, batch[1:3])
    assert nothing.status_code == 422 and len(nothing.json()["rejected"]) == 2 and len(stored(client)) == 1


def test_history_is_oldest_first_and_erasure_removes_stored_events(client: TestClient) -> None:
    users, items = users_and_items(client)
    post(client, [event(users[4], items[5], NOW + 10), event(users[4], items[6], NOW)])
    history = client.get(f"/v1/users/{users[4]}/history", headers=AUTH).json()
    assert history["user_id"] == users[4] and not history["truncated"]
    tail = history["events"][-2:]
    assert [(e["item_id"], e["source"]) for e in tail] == [(items[6], "stored"), (items[5], "stored")]
    assert all(e["source"] == "dataset" for e in history["events"][:-2])
    with_events = recs(client, users[4], k=5)
    erased = client.delete(f"/v1/users/{users[4]}", headers=AUTH)
    assert erased.status_code == 200 and erased.json() == {"user_id": users[4], "deleted": 2}
    after = recs(client, users[4], k=5)
    assert after["history_length"] == with_events["history_length"] - 2
    assert [e for e in stored(client) if e[0] == users[4]] == []
    assert client.delete("/v1/users/nobody-at-all", headers=AUTH).status_code == 404
    assert client.get("/v1/users/nobody-at-all/history", headers=AUTH).status_code == 404


def test_similar_items_are_ranked_by_cosine(client: TestClient) -> None:
    _, items = users_and_items(client)
    reply = client.get(f"/v1/items/{items[0]}/similar", params={"k": 5}, headers=AUTH)
    assert reply.status_code == 200
    found = reply.json()["items"]
    assert len(found) == 5 and items[0] not in [i["item_id"] for i in found]
    assert all(-1.0001 <= i["score"] <= 1.0001 for i in found)
    assert [i["score"] for i in found] == sorted((i["score"] for i in found), reverse=True)
    assert client.get("/v1/items/unknown-item/similar", headers=AUTH).status_code == 404


def test_id_only_models_refuse_new_items_and_predict_needs_a_classifier(client: TestClient) -> None:
    reply = client.post("/v1/items", json={"items": [{"item_id": "new", "text": "a new thing"}]}, headers=AUTH)
    assert reply.status_code == 409 and "cannot score new items" in reply.json()["detail"]
    reply = client.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1"]}, headers=AUTH)
    assert reply.status_code == 501 and "--classifier" in reply.json()["detail"]


def test_ops_endpoints_need_no_key(client: TestClient) -> None:
    users, _ = users_and_items(client)
    recs(client, users[0], k=3)
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'lmrec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in text
    assert "lmrec_http_request_duration_seconds_bucket" in text and 'lmrec_model_info{model="sasrec"' in text


# -- security and bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {KEY}"},
     {"Authorization": KEY}],
)  # fmt: skip
def test_keys_are_required_for_reads_and_writes(client: TestClient, headers: dict) -> None:
    users, items = users_and_items(client)
    body = {"events": [event(users[0], items[0])]}
    assert client.post("/v1/events", json=body, headers=headers).status_code == 401
    assert client.get(f"/v1/users/{users[0]}/recommendations", headers=headers).status_code == 401
    assert client.delete(f"/v1/users/{users[0]}", headers=headers).status_code == 401
    assert client.post("/v1/admin/reload", headers=headers).status_code == 401
    assert stored(client) == []


def test_public_reads_still_guard_writes(make_client: Callable[..., TestClient]) -> None:
    client = make_client(public_reads=True)
    users, items = users_and_items(client)
    assert client.get(f"/v1/users/{users[0]}/recommendations").status_code == 200
    assert client.post("/v1/events", json={"events": [event(users[0], items[0])]}).status_code == 401


BAD_BODIES = [
    b"{not json",
    b"[]",
    b'{"events": "nope"}',
    b'{"events": []}',
    b'{"events": [{"user_id": 5, "item_id": "1", "type": "view", "timestamp": 1}]}',
    b'{"events": [{"user_id": "1", "item_id": "1", "type": "view", "timestamp": true}]}',
    b'{"events": [{"user_id": "1", "item_id": "1", "type": "view", "timestamp": 1, "value": NaN}]}',
    b'{"events": [{"user_id": "1", "item_id": "1", "type": "view", "timestamp": 1, "extra": 1}]}',
    b'{"events": [{"user_id": "1", "item_id": "1", "type": "view"}]}',
    b'{"events": [{"user_id": "1\'; DROP TABLE lmrec_events; --", "item_id": "1", "type": "view", "timestamp": "x"}]}',
    json.dumps({"events": [event("1", "1")] * 1001}).encode(),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_batches_are_4xx_and_change_nothing(client: TestClient, body: bytes) -> None:
    reply = client.post("/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"]
    assert stored(client) == []


def test_sql_looking_ids_are_plain_data(client: TestClient) -> None:
    nasty = "x' OR '1'='1"
    drop = "1; DROP TABLE lmrec_events; --"
    assert post(client, [event(nasty, drop)]).status_code == 200
    assert stored(client) == [(nasty, drop, float(NOW))]
    assert recs(client, drop, k=2)["fallback"] == "popularity"
    history = client.get(f"/v1/users/{nasty}/history", headers=AUTH).json()
    assert [e["item_id"] for e in history["events"]] == [drop]
    assert client.delete(f"/v1/users/{drop}", headers=AUTH).status_code == 404
    assert len(stored(client)) == 1


def test_oversized_bodies_and_bad_parameters(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=10_000)
    users, items = users_and_items(client)
    big = json.dumps({"events": [event(users[0], items[0])] * 200})
    headers = {**AUTH, "Content-Type": "application/json"}
    assert client.post("/v1/events", content=big, headers=headers).status_code == 413

    def chunks():
        yield big.encode()

    streamed = client.post("/v1/events", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    for params in ({"k": 0}, {"k": 5000}, {"k": "ten"}, {"exclude_seen": "maybe"}, {"exclude": ",".join("x" * 1001)}):
        assert client.get(f"/v1/users/{users[0]}/recommendations", params=params, headers=AUTH).status_code == 422
    assert client.get("/v1/users/a%00b/recommendations", headers=AUTH).status_code == 422
    assert client.get(f"/v1/users/{'u' * 300}/history", headers=AUTH).status_code == 422
    assert post(client, [event(users[0], items[0])], key="bad\x01key").status_code in (400, 422)
    assert post(client, [event(users[0], items[0])], key="k" * 300).status_code == 422
    assert stored(client) == []


def test_faiss_retrieval_agrees_with_exact_scoring(make_client: Callable[..., TestClient]) -> None:
    exact = make_client()
    approximate = make_client(exact_limit=0)  # every catalogue goes through the FAISS index
    assert approximate.app.state.service.engine.index is not None
    users, items = users_and_items(exact)
    for user in users[:5]:
        for params in ({"k": 10}, {"k": 5, "exclude_seen": "false"}, {"k": 5, "exclude": ",".join(items[:10])}):
            want = recs(exact, user, **params)["items"]
            got = recs(approximate, user, **params)["items"]
            assert [i["item_id"] for i in got] == [i["item_id"] for i in want]
            assert [i["score"] for i in got] == pytest.approx([i["score"] for i in want], abs=1e-4)
    similar = approximate.get(f"/v1/items/{items[0]}/similar", params={"k": 5}, headers=AUTH).json()["items"]
    assert [i["item_id"] for i in similar] == [
        i["item_id"] for i in exact.get(f"/v1/items/{items[0]}/similar", params={"k": 5}, headers=AUTH).json()["items"]
    ]
