"""Online feedback: served lists hit or missed by the users' next events, per version; the log and its figures."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH

from lmrec.errors import LmrecError
from lmrec.registry.feedback import Resolved, Served, parse, read_feedback
from lmrec.registry.versions import ModelRegistry
from lmrec.serve import schemas as s
from lmrec.serve.feedback import Feedback, FeedbackLog
from lmrec.serve.metrics import Metrics
from lmrec.serve.store import StoredEvent

NOW = 1_800_000_000


def reply(user: str | None, version: str, items: list[str], fallback: str | None = None) -> s.Recommendations:
    """A recommendation reply as the service builds it."""
    ranked = [s.RecommendedItem(item_id=i, title=i, score=1.0) for i in items]
    return s.Recommendations(user_id=user, model_version=version, fallback=fallback, history_length=1,
                             unknown_items=0, items=ranked)  # fmt: skip


def events(user: str, *items: str, start: int = 0) -> list[StoredEvent]:
    """Stored events of one user, one second apart, in the given order."""
    return [StoredEvent(start + n, user, item, "view", NOW + start + n, None) for n, item in enumerate(items)]


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- the log format and its aggregation -----------------------------------------------------------------------


def test_records_round_trip_as_compact_lines() -> None:
    served = Served(NOW + 0.5, "3", "u1", ("a", "b"), 42)
    resolved = Resolved(NOW + 1.25, "3", None)
    line = '{"kind":"served","at":1800000000.5,"version":"3","user":"u1","items":["a","b"],"catalogue":42}'
    assert served.line() == line
    assert parse(served.line()) == served and parse(resolved.line()) == resolved


def test_aggregation_matches_figures_computed_by_hand(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    lines = [
        Served(NOW, "1", "u1", ("a", "b", "c"), 10).line(),
        Served(NOW, "1", "u2", ("b", "d"), 12).line(),  # items added meanwhile: the larger catalogue counts
        Resolved(NOW, "1", 1).line(),
        Resolved(NOW, "1", 3).line(),
        "not json",
        '{"kind":"resolved","at":1,"version":"1","rank":0}',  # ranks start at 1
        '{"kind":"served","at":1,"version":"1","user":"u","items":[],"catalogue":5}',
        "",
        '{"kind":"served","at":1,"version":"1","us',  # the torn last line of a killed process
    ]
    (folder / "served-1.jsonl").write_text("\n".join(lines) + "\n")
    other = [Served(NOW, "1", "u3", ("e",), 12), Resolved(NOW, "1", None), Resolved(NOW, "1", 7),
             Served(NOW, "2", "u1", ("a",), 12), Resolved(NOW, "2", None)]  # fmt: skip
    (folder / "served-2.jsonl").write_text("".join(f"{record.line()}\n" for record in other))
    (folder / "notes.txt").write_text("not a log")
    summary = read_feedback(folder)
    assert (summary.files, summary.skipped) == (2, 4)
    one, two = summary.versions["1"], summary.versions["2"]
    assert (one.served, one.resolved) == (3, 4)
    assert [one.hit_rate(k) for k in (1, 5, 10)] == [0.25, 0.5, 0.75]
    assert one.ndcg == pytest.approx((1 + 1 / math.log2(4) + 0 + 1 / math.log2(8)) / 4)
    assert one.coverage == pytest.approx(5 / 12)  # a b c d e
    assert (two.hit_rate(10), two.ndcg, two.coverage) == (0.0, 0.0, pytest.approx(1 / 12))
    assert read_feedback(tmp_path / "absent").versions == {}


# -- the tracker ----------------------------------------------------------------------------------------------


def test_hits_count_at_their_rank_for_the_version_that_served_them() -> None:
    metrics = Metrics()
    feedback = Feedback(metrics)
    feedback.served(reply("u", "1", ["a", "b", "c", "d", "e", "f"]), catalogue=20)
    feedback.served(reply("u", "2", ["x", "c"]), catalogue=20)  # a reload swapped versions in between
    feedback.observe(events("u", "c"))
    for version, hits, ndcg in (("1", [0, 1, 1], 1 / math.log2(4)), ("2", [0, 1, 1], 1 / math.log2(3))):
        assert sample(metrics, "lmrec_online_recommendations_resolved_total", version=version) == 1
        assert [sample(metrics, "lmrec_online_hits_total", version=version, k=str(k)) for k in (1, 5, 10)] == hits
        assert sample(metrics, "lmrec_online_ndcg_gain_total", version=version, k="10") == pytest.approx(ndcg)
    assert sample(metrics, "lmrec_online_coverage", version="1", k="10") == pytest.approx(6 / 20)
    feedback.observe(events("u", "a", start=5))  # both lists are resolved: nothing more counts
    assert sample(metrics, "lmrec_online_hits_total", version="1", k="1") == 0


def test_a_list_unhit_after_the_window_is_a_miss_and_events_count_in_time_order() -> None:
    metrics = Metrics()
    feedback = Feedback(metrics, window=2)
    feedback.served(reply("u", "1", ["a"]), catalogue=5)
    feedback.observe(events("u", "z"))
    assert sample(metrics, "lmrec_online_recommendations_resolved_total", version="1") == 0
    feedback.observe(events("u", "y", start=1))
    assert sample(metrics, "lmrec_online_recommendations_resolved_total", version="1") == 1
    assert sample(metrics, "lmrec_online_hits_total", version="1", k="10") == 0
    feedback.served(reply("u", "1", ["a"]), catalogue=5)
    feedback.observe(events("u", "z", "a", start=2))  # the second event of the window hits
    assert sample(metrics, "lmrec_online_hits_total", version="1", k="1") == 1
    once = Feedback(metrics)  # window 1: the earlier event decides, whatever the order in the batch
    once.served(reply("v", "1", ["a"]), catalogue=5)
    late, early = events("v", "a", "z", start=10)
    once.observe([StoredEvent(late.id, "v", "a", "view", NOW + 20, None), early])
    assert sample(metrics, "lmrec_online_hits_total", version="1", k="1") == 1
    assert sample(metrics, "lmrec_online_recommendations_resolved_total", version="1") == 3


def test_fallbacks_and_anonymous_sessions_are_not_tracked_and_memory_is_bounded() -> None:
    metrics = Metrics()
    feedback = Feedback(metrics, max_users=2, max_pending=2)
    feedback.served(reply(None, "1", ["a"]), catalogue=5)
    feedback.served(reply("u1", "1", ["a"], fallback="popularity"), catalogue=5)
    feedback.observe(events("u1", "a"))
    assert sample(metrics, "lmrec_online_recommendations_served_total", version="1") is None
    for user in ("u1", "u1", "u1", "u2", "u3"):
        feedback.served(reply(user, "1", ["a"]), catalogue=5)
    assert sample(metrics, "lmrec_online_recommendations_dropped_total", version="1") == 3  # one by u1, u1's two
    feedback.forget("u2")
    feedback.observe([*events("u1", "a"), *events("u2", "a"), *events("u3", "a")])
    assert sample(metrics, "lmrec_online_recommendations_dropped_total", version="1") == 4
    assert sample(metrics, "lmrec_online_recommendations_resolved_total", version="1") == 1  # u3 only
    with pytest.raises(LmrecError, match="at least 1 event"):
        Feedback(metrics, window=0)


def test_the_log_is_written_by_its_own_thread_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writers: list[str] = []
    write = FeedbackLog._write
    monkeypatch.setattr(FeedbackLog, "_write", lambda self, *a: (writers.append(threading.current_thread().name),
                                                                 write(self, *a)))  # fmt: skip
    metrics = Metrics()
    feedback = Feedback(metrics, tmp_path / "fb" / "served.jsonl", interval=0.02)
    feedback.served(reply("u", "1", ["a", "b"]), catalogue=5)
    feedback.observe(events("u", "b"))
    path, deadline = tmp_path / "fb" / "served.jsonl", time.monotonic() + 10
    while len(path.read_text().splitlines() if path.exists() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    feedback.close()
    served, resolved = [parse(line) for line in path.read_text().splitlines()]
    assert isinstance(served, Served) and served.items == ("a", "b")
    assert isinstance(resolved, Resolved) and (resolved.version, resolved.rank) == ("1", 2)
    assert set(writers) == {"lmrec-feedback-log"}


# -- through the service --------------------------------------------------------------------------------------


def first_user(client: TestClient) -> str:
    return str(client.app.state.service.engine.dataset.user_ids[0])


def recommended(client: TestClient, user: str, k: int = 10) -> list[str]:
    response = client.get(f"/v1/users/{user}/recommendations", params={"k": k}, headers=AUTH)
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def post(client: TestClient, user: str, item: str, key: str | None = None) -> dict:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    body = {"events": [{"user_id": user, "item_id": item, "type": "view", "timestamp": NOW}]}
    response = client.post("/v1/events", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_served_and_hit_list_shows_in_metrics_and_the_log_after_a_flush(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    log = tmp_path / "feedback.jsonl"
    client = make_client(feedback_log=log, feedback_flush_interval=3600)
    service = client.app.state.service
    user, version = first_user(client), service.engine.version
    items = recommended(client, user)
    post(client, user, items[2])
    text = client.get("/metrics").text
    assert f'lmrec_online_hits_total{{k="5",version="{version}"}} 1.0' in text
    assert f'lmrec_online_hits_total{{k="1",version="{version}"}} 0.0' in text
    assert f'lmrec_online_recommendations_resolved_total{{version="{version}"}} 1.0' in text
    assert f'lmrec_online_coverage{{k="10",version="{version}"}} {len(items) / service.engine.n_items}' in text
    assert not log.exists()  # neither the request nor the event wrote: only the writer does, on its interval
    service.feedback.flush()
    served, resolved = [json.loads(line) for line in log.read_text().splitlines()]
    assert served["user"] == user and served["items"] == items and served["version"] == version
    assert (resolved["kind"], resolved["rank"]) == ("resolved", 3)


def test_sessions_fallbacks_and_replayed_batches_do_not_count(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    metrics = client.app.state.service.metrics
    user, version = first_user(client), client.app.state.service.engine.version
    item = client.app.state.service.engine.item_ids[1]
    assert client.post("/v1/recommendations", json={"item_ids": [item]}, headers=AUTH).status_code == 200
    assert recommended(client, "nobody-at-all") and post(client, "nobody-at-all", "x")["accepted"] == 1
    assert sample(metrics, "lmrec_online_recommendations_served_total", version=version) is None
    items = recommended(client, user)
    post(client, user, items[0], key="batch-1")
    recommended(client, user)
    assert post(client, user, items[0], key="batch-1")["replayed"] is True  # stored once, counted once
    assert sample(metrics, "lmrec_online_recommendations_served_total", version=version) == 2
    assert sample(metrics, "lmrec_online_recommendations_resolved_total", version=version) == 1
    assert client.delete(f"/v1/users/{user}", headers=AUTH).status_code == 200
    assert sample(metrics, "lmrec_online_recommendations_dropped_total", version=version) == 1


def test_registry_show_reports_the_online_figures(
    tiny_run: Path, tmp_path: Path, make_client: Callable[..., TestClient], run_cli
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tiny_run, promote=True)
    code, out, err = run_cli(["registry", "show", "--registry", str(registry.root)])
    assert code == 0, err
    assert "version 1 (promoted)" in out and "online: nothing served by version 1 yet" in out
    client = make_client(source=registry.root)
    user = first_user(client)
    post(client, user, recommended(client, user)[0])
    post(client, user, recommended(client, user)[4])
    recommended(client, user)  # served, not resolved yet
    client.app.state.service.feedback.flush()
    assert len(list((registry.root / "feedback").glob("served-*.jsonl"))) == 1
    code, out, err = run_cli(["registry", "show", "1", "--registry", str(registry.root)])
    assert code == 0, err
    assert "online: 3 served, 2 resolved, HR@1 0.5000, HR@5 1.0000, HR@10 1.0000" in out
    assert f"NDCG@10 {(1 + 1 / math.log2(6)) / 2:.4f}" in out and "test: hr@5 " in out
    code, _, err = run_cli(["registry", "show", "7", "--registry", str(registry.root)])
    assert code == 1 and "version 7 is not in registry" in err
