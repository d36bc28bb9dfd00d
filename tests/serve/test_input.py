"""Invalid text is refused where it enters (JSON body, path, query) with a 422 that does not echo it."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import AUTH

from lmrec.serve import schemas as s

JSON = {**AUTH, "Content-Type": "application/json"}
EXAMPLES = 100
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def known_user(client: TestClient) -> str:
    return str(client.app.state.service.engine.dataset.user_ids[0])


def assert_422_without_echo(reply, *forbidden: str) -> None:
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"]
    for text in forbidden:
        assert text not in reply.text


LONE_SURROGATES = [
    ("/v1/recommendations", b'{"item_ids": ["1"], "candidates": ["\\ud800"]}'),
    ("/v1/recommendations", b'{"item_ids": ["\\udfff"]}'),
    ("/v1/recommendations", b'{"item_ids": [], "\\ud800": 1}'),
    ("/v1/predict", b'{"user_id": "\\ud83d", "item_ids": ["1"]}'),
    ("/v1/items", b'{"items": [{"item_id": "new", "text": "a thing", "title": "\\ud800"}]}'),
    ("/v1/events", b'{"events": [{"user_id": "\\ud800", "item_id": "1", "type": "view", "timestamp": 1}]}'),
]


@pytest.mark.parametrize(("path", "body"), LONE_SURROGATES)
def test_lone_surrogates_in_a_body_are_422(
    make_client: Callable[..., TestClient], classifier_run: Path, path: str, body: bytes
) -> None:
    client = make_client(classifier=classifier_run)
    reply = client.post(path, content=body, headers=JSON)
    assert_422_without_echo(reply, "\\ud8", "\\udf")
    assert "surrogate" in reply.text
    assert client.app.state.service.store.all_events() == []


def test_a_surrogate_pair_is_ordinary_text(client: TestClient) -> None:
    reply = client.post("/v1/recommendations", content=b'{"candidates": ["\\ud83d\\ude00"]}', headers=JSON)
    assert reply.status_code == 200, reply.text
    assert reply.json()["skipped_candidates"] == ["\U0001f600"]


@pytest.mark.parametrize(
    "path",
    ["/v1/users/%ff%fe/recommendations", "/v1/users/%ed%a0%80/history", "/v1/items/a%c3/similar",
     "/v1/users/%80"],
)  # fmt: skip
def test_invalid_utf8_in_a_path_is_422(client: TestClient, path: str) -> None:
    method = client.delete if path.count("/") == 3 else client.get
    assert_422_without_echo(method(path, headers=AUTH), "\ufffd")


def test_different_invalid_user_ids_do_not_collide(client: TestClient) -> None:
    for path in ("/v1/users/%ff%fe/recommendations", "/v1/users/%fe%ff/recommendations"):
        assert client.get(path, headers=AUTH).status_code == 422
    assert client.get("/v1/users/%ef%bf%bd/recommendations", headers=AUTH).status_code == 200  # U+FFFD is valid


@pytest.mark.parametrize("query", ["candidates=%ff", "exclude=a,%ed%a0%80", "k=1&%ff=1", "candidates=a%00b"])
def test_invalid_text_in_a_query_is_422(client: TestClient, query: str) -> None:
    reply = client.get(f"/v1/users/{known_user(client)}/recommendations?{query}", headers=AUTH)
    assert_422_without_echo(reply, "\ufffd", "\\u0000")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe{}", b'{"item_ids": ["\xc3"]}', b"[" * 100_000 + b"]" * 100_000,
     b'{"item_ids": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"],
)  # fmt: skip
def test_malformed_or_deeply_nested_json_is_422(client: TestClient, body: bytes) -> None:
    reply = client.post("/v1/recommendations", content=body, headers=JSON)
    assert_422_without_echo(reply)


def test_field_names_are_not_echoed_unbounded(client: TestClient) -> None:
    key = "k" * 5000
    reply = client.post("/v1/recommendations", json={key: 1}, headers=AUTH)
    assert_422_without_echo(reply, key)


def test_ids_in_a_session_body_are_checked(client: TestClient) -> None:
    for body in ({"candidates": ["x" * 300]}, {"item_ids": ["a\x00b"]}, {"exclude": [""]}):
        assert_422_without_echo(client.post("/v1/recommendations", json=body, headers=AUTH), "x" * 300, "\\u0000")


def test_control_characters_are_unicode_category_cc() -> None:
    """Ids refuse exactly Unicode's control characters (all below U+00A0); `allowed` exempts what it names."""
    breaks = "\n\r\t"
    for code in range(0x3000):
        char = chr(code)
        control = unicodedata.category(char) == "Cc"
        assert (s.id_problem(f"a{char}b") == "id contains control characters") == control, hex(code)
        assert (s.text_problem(f"a{char}b", "text", breaks) is not None) == (control and char not in breaks), hex(code)


# -- property-based: no path or query parameter is a server error -----------------------------------------

any_text = st.text(st.characters(exclude_categories=[]), max_size=40)  # surrogates and control characters too
percent_bytes = st.binary(max_size=12).map(lambda raw: "".join(f"%{b:02x}" for b in raw))
segments = st.one_of(any_text.map(lambda text: quote(text.encode("utf-8", "surrogatepass"), safe="")), percent_bytes)


def utf8(segment: str) -> bool:
    """Whether a percent-encoded URL segment decodes to UTF-8 text."""
    try:
        unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def clean(text: str) -> bool:
    """Valid Unicode without control characters: what the service may echo."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF and unicodedata.category(c) != "Cc" for c in text)


@PROPERTY
@given(segment=segments)
def test_any_id_in_a_path_gives_no_500(client: TestClient, segment: str) -> None:
    for method, path in (("GET", f"/v1/users/{segment}/recommendations"), ("GET", f"/v1/users/{segment}/history"),
                         ("DELETE", f"/v1/users/{segment}"), ("GET", f"/v1/items/{segment}/similar")):  # fmt: skip
        reply = client.request(method, path, headers=AUTH)
        assert reply.status_code < 500, (path, reply.text)
        if not utf8(segment):
            assert reply.status_code == 422 and "\ufffd" not in reply.text, (path, reply.text)
        if reply.status_code == 200 and "user_id" in reply.json():
            assert clean(reply.json()["user_id"])


@PROPERTY
@given(params=st.lists(st.tuples(st.sampled_from(["k", "exclude_seen", "explain", "exclude", "candidates"]) | segments,
                                 segments), max_size=4))  # fmt: skip
def test_any_query_gives_no_500(client: TestClient, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{name}={value}" for name, value in params)
    for path in (f"/v1/users/{known_user(client)}/recommendations", "/v1/items/i000001/similar"):
        reply = client.get(f"{path}?{query}", headers=AUTH)
        assert reply.status_code < 500, (query, reply.text)
        if not utf8(query):
            assert reply.status_code == 422, (query, reply.text)
        if reply.status_code == 200:
            assert all(clean(item) for item in reply.json().get("skipped_candidates", []))
