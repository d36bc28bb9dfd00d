"""What the web page needs from the API: the user picker, the auth probe, titled histories, and the page's files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import AUTH

from lmrec.serve.page import POLICY
from lmrec.serve.schemas import CleanEvent
from lmrec.serve.store import EventStore


def post_view(client: TestClient, user: str, item: str) -> None:
    """Store one view event (now) and check it was accepted."""
    event = {"user_id": user, "item_id": item, "type": "view", "timestamp": time.time()}
    assert client.post("/v1/events", json={"events": [event]}, headers=AUTH).json()["accepted"] == 1


def users(client: TestClient, **params: str | int) -> dict:
    reply = client.get("/v1/users", params=params, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_users_are_the_dataset_and_store_ids_with_the_prefix_in_code_point_order(client: TestClient) -> None:
    dataset = sorted(client.app.state.service.engine.dataset.user_ids)
    first = users(client)
    assert first == {"users": dataset[:20], "truncated": True}
    assert users(client, limit=1000) == {"users": dataset, "truncated": False}
    prefix = dataset[0][:-1]  # the first ten ids share all but their last character
    matching = [user for user in dataset if user.startswith(prefix)]
    assert users(client, prefix=prefix, limit=len(matching)) == {"users": matching, "truncated": False}
    post_view(client, f"{prefix}-new", "i000001")  # a user only the store knows, sorted among the others
    post_view(client, "Zed", "i000001")
    assert users(client, prefix=prefix, limit=100)["users"] == sorted([*matching, f"{prefix}-new"])
    assert users(client, prefix="Z") == {"users": ["Zed"], "truncated": False}
    assert users(client, limit=1)["users"] == ["Zed"]  # "Z" sorts before "u": code points, not case folded
    assert users(client, prefix="u%")["users"] == [] and users(client, prefix="_")["users"] == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_store_lists_distinct_users_by_exact_prefix_in_code_point_order(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = EventStore(url)
    ids = ["b", "a", "B", "ab", "a_c", "a%c", "é", "a", "ab"]
    store.append([CleanEvent(user, "i1", "view", float(n), None) for n, user in enumerate(ids)], {})
    assert store.user_ids("", 100) == sorted(set(ids)) == ["B", "a", "a%c", "a_c", "ab", "b", "é"]
    assert store.user_ids("a", 2) == ["a", "a%c"]
    assert store.user_ids("a_", 10) == ["a_c"] and store.user_ids("a%", 10) == ["a%c"]  # no LIKE wildcards
    assert store.user_ids("A", 10) == [] and store.user_ids("é", 10) == ["é"]
    store.close()


def test_users_refuse_control_characters_and_need_a_read_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.get("/v1/users", params={"prefix": "u\x00"}, headers=AUTH).status_code == 422
    assert client.get("/v1/users", params={"limit": 0}, headers=AUTH).status_code == 422
    assert client.get("/v1/users").status_code == 401
    assert make_client(public_reads=True).get("/v1/users").status_code == 200


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(prefix=st.text(st.characters(exclude_categories=[]), max_size=12))  # surrogates and control characters too
def test_any_prefix_gives_no_500_and_only_users_that_start_with_it(client: TestClient, prefix: str) -> None:
    reply = client.get(f"/v1/users?prefix={quote(prefix.encode('utf-8', 'surrogatepass'), safe='')}", headers=AUTH)
    assert reply.status_code in (200, 422), reply.text
    if reply.status_code == 200:
        assert all(user.startswith(prefix) for user in reply.json()["users"])


def test_auth_says_what_needs_a_key_and_whether_the_key_sent_is_valid(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    assert client.get("/v1/auth").json() == {"reads": "key", "writes": "key", "key": "absent"}
    assert client.get("/v1/auth", headers=AUTH).json()["key"] == "valid"
    assert client.get("/v1/auth", headers={"Authorization": "Bearer not-the-key-0123456789"}).json()["key"] == "invalid"
    public = make_client(public_reads=True).get("/v1/auth").json()
    assert public == {"reads": "public", "writes": "key", "key": "absent"}
    assert make_client(api_keys=frozenset()).get("/v1/auth").json()["writes"] == "public"


def test_history_events_carry_the_item_titles(client: TestClient) -> None:
    engine = client.app.state.service.engine
    user = str(engine.dataset.user_ids[0])
    post_view(client, user, "not-in-the-catalogue")
    events = client.get(f"/v1/users/{user}/history", headers=AUTH).json()["events"]
    assert [e["title"] for e in events[:-1]] == [engine.title(engine.item_index[e["item_id"]]) for e in events[:-1]]
    assert events[-1]["title"] == "not-in-the-catalogue" and events[-1]["source"] == "stored"


def test_the_page_and_its_assets_are_served_with_a_same_origin_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == POLICY and "connect-src 'self'" in POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        reply = client.get(f"/static/{asset}")
        assert reply.status_code == 200 and kind in reply.headers["content-type"], asset
    assert client.get("/static/../page.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]
