"""Pre-training on one catalogue, then fine-tuning on another through --init (inductive transfer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec import api
from lmrec.errors import RunError
from lmrec.training.pretrain import contrastive_loss

FAST = ["model.hidden=32", "model.max_len=8", "model.experts=2", "train.batch_size=16", "train.lr=0.01"]


def _catalogue(write_prepared, path: Path, n_items: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(40):
        start, length = int(rng.integers(n_items)), int(rng.integers(6, 20))
        sequences.append([(start + t) % n_items + 1 for t in range(length)])
    return write_prepared(path, sequences, n_items)


def test_contrastive_loss_prefers_the_matching_item() -> None:
    table = torch.eye(5)
    good = contrastive_loss(table[[1, 2, 3]], torch.tensor([1, 2, 3]), table, 0.1)
    bad = contrastive_loss(table[[2, 3, 1]], torch.tensor([1, 2, 3]), table, 0.1)
    assert good < bad


def test_pretrain_then_fine_tune_with_init(make_prepared, tmp_path: Path) -> None:
    source = _catalogue(make_prepared, tmp_path / "a", 20, 0)
    target = _catalogue(make_prepared, tmp_path / "b", 25, 1)
    metrics = api.pretrain([source], tmp_path / "pre", overrides=[*FAST, "train.epochs=2"])
    assert metrics["epochs"] == 2 and 0 <= metrics["valid"]["ndcg@10"] <= 1
    tuned = api.train(
        target,
        tmp_path / "tuned",
        model="lmrec",
        init=tmp_path / "pre",
        overrides=["train.epochs=1", "train.user_fraction=0.5", "model.use_id=false"],
    )
    assert tuned["init"]["loaded"] > 10
    assert set(tuned["init"]["skipped"]) <= {"text_emb", "has_id", "item_emb.weight"}
    # the pre-trained architecture became the default: hidden 32, not the shipped 64
    assert api.Recommender.load(tmp_path / "tuned").model.cfg.hidden == 32


def test_init_from_another_model_is_refused(make_prepared, tmp_path: Path) -> None:
    data = _catalogue(make_prepared, tmp_path / "a", 20, 0)
    api.train(data, tmp_path / "pop", model="pop", overrides=["train.epochs=1"])
    with pytest.raises(RunError, match="holds a pop model"):
        api.train(data, tmp_path / "x", model="lmrec", init=tmp_path / "pop", overrides=FAST)
    with pytest.raises(RunError, match="no checkpoint"):
        api.train(data, tmp_path / "y", model="lmrec", init=tmp_path / "nothing")


def test_an_inductive_model_scores_another_catalogue_zero_shot(make_prepared, tmp_path: Path, run_cli) -> None:
    source = _catalogue(make_prepared, tmp_path / "a", 20, 0)
    target = _catalogue(make_prepared, tmp_path / "b", 25, 1)
    api.pretrain([source], tmp_path / "pre", overrides=[*FAST, "train.epochs=1"])
    result = api.evaluate(tmp_path / "pre", data=target, ks=[10])
    assert len(result) == 40 and 0 <= result.metrics["ndcg@10"] <= 1
    recommender = api.Recommender.load(tmp_path / "pre", data=target)
    assert recommender.model.n_items == 25 and len(recommender.recommend("u0", k=5)) == 5
    code, out, err = run_cli(["evaluate", str(tmp_path / "pre"), "--data", str(target), "--k", "10"])
    assert code == 0 and "ndcg@10" in out, err
    code, _, err = run_cli(["evaluate", str(tmp_path / "pre")])
    assert code == 1 and "give the dataset to score with --data" in err
    # a model with learned item IDs does not transfer
    api.train(source, tmp_path / "ids", model="lmrec", overrides=[*FAST, "train.epochs=1"])
    with pytest.raises(RunError, match="knows that catalogue's items by id"):
        api.Recommender.load(tmp_path / "ids", data=target)


def test_zero_shot_refuses_another_text_encoder(make_prepared, tmp_path: Path) -> None:
    import json

    source = _catalogue(make_prepared, tmp_path / "a", 20, 0)
    target = _catalogue(make_prepared, tmp_path / "b", 25, 1)
    api.pretrain([source], tmp_path / "pre", overrides=[*FAST, "train.epochs=1"])
    info_file = tmp_path / "pre" / "run.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "item_text": {**info["item_text"], "model_id": "0" * 64}}))
    with pytest.raises(RunError, match="another text encoder"):
        api.Recommender.load(tmp_path / "pre", data=target)


def test_a_neighbourhood_is_refused_by_pretrain_and_added_when_fine_tuning(make_prepared, tmp_path: Path) -> None:
    from lmrec.errors import ConfigError

    source = _catalogue(make_prepared, tmp_path / "a", 20, 0)
    target = _catalogue(make_prepared, tmp_path / "b", 25, 1)
    with pytest.raises(ConfigError, match="neighbourhood_weight"):
        api.pretrain([source], tmp_path / "refused", overrides=[*FAST, "model.neighbourhood_weight=2"])
    assert not (tmp_path / "refused").exists()
    api.pretrain([source], tmp_path / "pre", overrides=[*FAST, "train.epochs=1"])
    votes = ["model.neighbourhood_weight=2", "model.neighbourhood.text_weight=1"]
    tuned = api.train(
        target, tmp_path / "tuned", model="lmrec", init=tmp_path / "pre", overrides=["train.epochs=1", *votes]
    )
    assert tuned["init"]["loaded"] > 10
    model = api.Recommender.load(tmp_path / "tuned").model
    assert model.neighbourhood is not None and model.neighbourhood.counts.shape == (26,)  # the target's counts
    assert model.neighbourhood.counts.sum() > 0
