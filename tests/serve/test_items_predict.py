"""New items by text with an lmrec model, and behaviour predictions with a classifier run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import AUTH, TINY

import lmrec
from lmrec.inference.classifier import load_run, predict_user


@pytest.fixture(scope="module")
def lmrec_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny lmrec (text-aware) run: items are encoded by the bundled sentence encoder."""
    out = tmp_path_factory.mktemp("lmrec-run") / "lmrec"
    lmrec.train(prepared, out, model="lmrec", overrides=[*TINY, "model.experts=2"])
    return out


def test_items_added_by_text_are_recommendable_at_once(lmrec_run: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(source=lmrec_run)
    dataset = client.app.state.service.engine.dataset
    user = str(dataset.user_ids[0])
    existing = str(dataset.item_ids[1])
    body = {"items": [
        {"item_id": "brand-new", "text": dataset.item_text[2] or "a new product", "title": "Brand new"},
        {"item_id": existing, "text": "a rewritten description"},
    ]}  # fmt: skip
    reply = client.post("/v1/items", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json()["added"] == 1 and reply.json()["updated"] == 1
    ranked = client.get(f"/v1/users/{user}/recommendations", params={"candidates": "brand-new", "k": 1},
                        headers=AUTH).json()  # fmt: skip
    assert [i["item_id"] for i in ranked["items"]] == ["brand-new"] and ranked["items"][0]["title"] == "Brand new"
    similar = client.get("/v1/items/brand-new/similar", params={"k": 3}, headers=AUTH)
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    full = client.get(f"/v1/users/{user}/recommendations", params={"k": dataset.n_items + 1, "exclude_seen": "false"},
                      headers=AUTH).json()  # fmt: skip
    assert "brand-new" in [i["item_id"] for i in full["items"]]
    events = {"events": [{"user_id": user, "item_id": "brand-new", "type": "view", "timestamp": 1_900_000_000}]}
    assert client.post("/v1/events", json=events, headers=AUTH).json()["unknown_items"] == 0

    restarted = make_client(source=lmrec_run)  # the same store: added items are applied again on load
    again = restarted.get("/v1/items/brand-new/similar", params={"k": 3}, headers=AUTH)
    assert again.json()["items"] == similar.json()["items"]
    bad = restarted.post("/v1/items", json={"items": [{"item_id": "", "text": "x"}]}, headers=AUTH)
    assert bad.status_code == 422
    bad = restarted.post("/v1/items", json={"items": [{"item_id": "b", "text": "a\x00b"}]}, headers=AUTH)
    assert bad.status_code == 422
    described = {"items": [{"item_id": "described", "text": "Cordless drill\n\tTwo batteries\r\nCase included"}]}
    assert restarted.post("/v1/items", json=described, headers=AUTH).status_code == 200  # descriptions have lines


def test_predict_returns_the_classifier_probabilities(
    classifier_run: Path, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(classifier=classifier_run)
    dataset = client.app.state.service.engine.dataset
    user, items = str(dataset.user_ids[0]), [str(i) for i in dataset.item_ids[1:4]]
    reply = client.post("/v1/predict", json={"user_id": user, "item_ids": items}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = predict_user(load_run(classifier_run), user, items)
    assert body["label"] == "sampled" and [p["item_id"] for p in body["predictions"]] == items
    assert [p["probability"] for p in body["predictions"]] == pytest.approx([p.probability for p in expected])
    unknown = client.post("/v1/predict", json={"user_id": "nobody", "item_ids": items}, headers=AUTH)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert client.post("/v1/predict", json={"user_id": user, "item_ids": []}, headers=AUTH).status_code == 422


def test_predict_reads_the_live_history(classifier_run: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(classifier=classifier_run)
    classifier = client.app.state.service.classifier
    dataset = classifier.dataset
    user = str(dataset.user_ids[1])
    seen = set(dataset.sequence(1).tolist())
    fresh = [str(dataset.item_ids[i]) for i in range(1, dataset.n_items + 1) if i not in seen][:2]
    items = [fresh[0], str(dataset.item_ids[next(iter(seen))])]
    read: list[str] = []
    predict_texts = classifier.predict_texts

    def recording(histories, *args, **kwargs):
        read.extend(histories)
        return predict_texts(histories, *args, **kwargs)

    classifier.predict_texts = recording
    body = {"user_id": user, "item_ids": items}
    before = client.post("/v1/predict", json=body, headers=AUTH).json()["predictions"]
    assert [p["seen"] for p in before] == [False, True]
    events = [{"user_id": user, "item_id": i, "type": "view", "timestamp": 1_900_000_000 + n}
              for n, i in enumerate(["not-in-the-catalogue", fresh[1], fresh[0]])]  # fmt: skip
    assert client.post("/v1/events", json={"events": events}, headers=AUTH).status_code == 200
    read.clear()
    after = client.post("/v1/predict", json=body, headers=AUTH).json()["predictions"]
    assert [p["seen"] for p in after] == [True, True]
    newest_first = classifier.history_text([dataset.item_index[fresh[0]], dataset.item_index[fresh[1]]], ["", ""])
    assert read and all(text.startswith(newest_first) for text in read)  # the posted events, newest first
    stored = client.app.state.service.store.user_events(user)
    expected = predict_user(load_run(classifier_run), user, items, stored)
    assert [p["probability"] for p in after] == pytest.approx([p.probability for p in expected])

    newcomer = [{"user_id": "only-in-the-store", "item_id": items[1], "type": "view", "timestamp": 1_900_000_000}]
    assert client.post("/v1/events", json={"events": newcomer}, headers=AUTH).status_code == 200
    reply = client.post("/v1/predict", json={"user_id": "only-in-the-store", "item_ids": items}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert [p["seen"] for p in reply.json()["predictions"]] == [False, True]


def test_added_items_are_encoded_with_the_models_text_settings(
    lmrec_run: Path, make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmrec.text.items as items

    client = make_client(source=lmrec_run)
    seen: dict = {}
    real = items.encode_items

    def recording(texts, ids, **options):
        seen.update(options)
        return real(texts, ids, **options)

    monkeypatch.setattr(items, "encode_items", recording)
    body = {"items": [{"item_id": "another-new", "text": "a cordless drill"}]}
    assert client.post("/v1/items", json=body, headers=AUTH).status_code == 200
    assert seen == items.encoder_options(client.app.state.service.engine.recommender.model.config)


def test_an_itemknn_run_with_text_serves_explained_recommendations_and_refuses_new_items(
    prepared: Path, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    run = tmp_path / "itemknn"
    lmrec.train(prepared, run, model="itemknn", overrides=["model.text_weight=1.0", "model.history_weight=-1.0"])
    client = make_client(source=run)
    user = str(client.app.state.service.engine.dataset.user_ids[0])
    reply = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": "true"}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    items = reply.json()["items"]
    assert len(items) == 5 and all(item["because"] for item in items)
    added = client.post("/v1/items", json={"items": [{"item_id": "new", "text": "a new product"}]}, headers=AUTH)
    assert added.status_code in (409, 422) and "itemknn" in added.text


def test_an_lmrec_run_with_a_neighbourhood_serves_explains_and_takes_new_items(
    prepared: Path, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    from lmrec.errors import ConfigError

    run = tmp_path / "blend"
    votes = ["model.neighbourhood_weight=3", "model.neighbourhood.text_weight=1.0", "model.neighbourhood.recent=2"]
    lmrec.train(prepared, run, model="lmrec", overrides=[*TINY, "model.experts=2", *votes])
    client = make_client(source=run)
    engine = client.app.state.service.engine
    assert engine.index is None and not engine.dot_product  # the votes are outside the item table
    user = str(engine.dataset.user_ids[0])
    reply = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "explain": "true"}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    served = [item["item_id"] for item in reply.json()["items"]]
    expected = lmrec.Recommender.load(run).recommend(user, k=5)
    assert served == [item.item_id for item in expected] and all(i["because"] for i in reply.json()["items"])
    added = client.post("/v1/items", json={"items": [{"item_id": "new", "text": "a new product"}]}, headers=AUTH)
    assert added.status_code == 200, added.text
    ranked = client.get(f"/v1/users/{user}/recommendations", params={"candidates": "new", "k": 1}, headers=AUTH)
    assert [i["item_id"] for i in ranked.json()["items"]] == ["new"]
    with pytest.raises(ConfigError, match="neighbourhood_weight"):
        lmrec.export(run, out=tmp_path / "onnx")
