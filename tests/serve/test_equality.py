"""`lmrec recommend` (CLI), `Recommender.recommend` (Python API) and the service give the same list and explanations."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH

import lmrec
from lmrec.cli import main


def cli_items(run: Path, user: str, k: int, capsys) -> list[str]:
    """Item ids in the order `lmrec recommend` prints them (the table's second column)."""
    main(["recommend", str(run), "--user", user, "--k", str(k)])
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines() if line.count("│") >= 4]
    return [cells[2].strip() for cells in rows if cells[1].strip().isdigit()]


@pytest.mark.parametrize("exclude_seen", [None, False])
def test_cli_api_and_service_agree(tiny_run: Path, client: TestClient, capsys, exclude_seen: bool | None) -> None:
    recommender = lmrec.Recommender.load(tiny_run)
    for user in [str(u) for u in recommender.dataset.user_ids[:5]]:
        options = {} if exclude_seen is None else {"exclude_seen": exclude_seen}
        api = recommender.recommend(user, k=8, **options)
        params = {"k": 8} | ({} if exclude_seen is None else {"exclude_seen": "false"})
        served = client.get(f"/v1/users/{user}/recommendations", params=params, headers=AUTH).json()
        assert [r.item_id for r in api] == [i["item_id"] for i in served["items"]]
        assert [r.score for r in api] == pytest.approx([i["score"] for i in served["items"]], abs=1e-6)
        if exclude_seen is None:
            assert cli_items(tiny_run, user, 8, capsys) == [r.item_id for r in api]


def test_the_api_and_the_service_explain_alike(tiny_run: Path, client: TestClient) -> None:
    recommender = lmrec.Recommender.load(tiny_run)
    for user in [str(u) for u in recommender.dataset.user_ids[:3]]:
        api = recommender.recommend(user, k=4, explain=True)
        served = client.get(f"/v1/users/{user}/recommendations", params={"k": 4, "explain": "true"}, headers=AUTH)
        for rec, item in zip(api, served.json()["items"], strict=True):
            assert [(e.item_id, e.title) for e in rec.because] == [(b["item_id"], b["title"]) for b in item["because"]]
            assert [e.weight for e in rec.because] == pytest.approx([b["weight"] for b in item["because"]], abs=1e-6)


def test_a_user_without_history_gets_the_services_popularity_fallback(tiny_run: Path, client: TestClient) -> None:
    import numpy as np

    recommender = lmrec.Recommender.load(tiny_run)
    api = recommender.recommend_history(np.zeros(0, dtype=np.int64), k=6, explain=True)
    engine = client.app.state.service.engine
    served = engine.popular(6)
    assert [r.item_id for r in api] == [engine.item_ids[r.item] for r in served]
    assert [r.score for r in api] == pytest.approx([r.score for r in served])
