"""`lmrec classify train / evaluate / predict` end to end on a synthetic log with a tiny BERT."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lmrec import api
from lmrec.cli import main

WORDS = ["view", "click", "purchase", "books", "electronics", "atlas", "charger", "router", ";", "|", "—", "1"]
FAST = ["--max-train-examples", "48", "--max-length", "32", "--history", "3", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_bert(make_tiny_bert) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocabulary of a few words, saved as a model folder."""
    return make_tiny_bert(WORDS)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic log (with event_type and value columns) prepared with a temporal split at 80% of events."""
    root = tmp_path_factory.mktemp("classify-cli")
    main(["data", "synth", "--users", "60", "--items", "40", "--events", "1500", "--out", str(root / "log.csv")])
    main(["data", "prepare", str(root / "log.csv"), "--items", str(root / "log.items.csv"), "--split", "temporal",
          "--cutoff", "0.8", "--out", str(root / "d")])  # fmt: skip
    return root / "d"


def test_train_evaluate_predict(prepared: Path, tiny_bert: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    argv = ["classify", "train", str(prepared), "--label", "type=click", "--out", str(out), "--encoder", str(tiny_bert)]
    code, stdout, err = run_cli([*argv, *FAST, "--max-valid-examples", "32", "--epochs", "2"])
    assert code == 0, err
    assert "cross-encoder" in stdout and "bias baseline" in stdout and "truncated at 32 tokens" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("accuracy", "precision", "recall", "f1", "auc", "logloss"):
        assert name in metrics["test"] and name in metrics["baseline"]
    assert metrics["examples"]["train_used"] == 48 and not metrics["examples"]["test_subsampled"]
    assert {"config.yaml", "run.json", "metrics.json", "model", "predictions"} <= {p.name for p in out.iterdir()}
    checks = metrics["training"]["encoder"]["checks"]  # the per-validation history, also in TensorBoard
    assert checks and all({"step", "loss", "logloss"} <= set(row) for row in checks)
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert f"lmrec.training.classifier: step {checks[-1]['step']}  loss " in err
    assert "lmrec.training.classifier: stopped by the epoch limit (2)" in err
    assert f"TensorBoard: tensorboard --logdir {tmp_path}" in stdout

    code, stdout, err = run_cli(["classify", "evaluate", str(out), "--resamples", "50"])
    assert code == 0, err
    assert "auc" in stdout and "Δ (paired)" in stdout

    users = pq.read_table(prepared / "users.parquet").column("user_id").to_pylist()
    items = pq.read_table(prepared / "items.parquet").column("item_id").to_pylist()
    code, stdout, err = run_cli(["classify", "predict", str(out), "--user", users[0], "--item", items[0],
                             "--item", items[1]])  # fmt: skip
    assert code == 0, err
    assert items[0] in stdout and items[1] in stdout and "probability" in stdout

    code, _, err = run_cli([*argv, *FAST])
    assert code == 1 and "already exists" in err
    code, _, err = run_cli([*argv, *FAST, "--mode", "full", "--label", "sampled", "--max-test-examples", "50",
                        "--max-valid-examples", "0", "--overwrite"])  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["examples"]["test_used"] == 50


def test_evaluate_and_recommend_rerank_with_a_classifier(prepared: Path, tiny_bert: Path, tmp_path: Path, run_cli):
    first, clf = tmp_path / "pop", tmp_path / "clf"
    assert run_cli(["train", str(prepared), "--model", "pop", "--out", str(first)])[0] == 0
    code, _, err = run_cli(["classify", "train", str(prepared), "--label", "sampled", "--out", str(clf),
                            "--encoder", str(tiny_bert), *FAST, "--epochs", "1", "--max-valid-examples", "0",
                            "--max-test-examples", "20"])  # fmt: skip
    assert code == 0, err
    code, stdout, err = run_cli(["evaluate", str(first), "--k", "5,10", "--rerank", str(clf), "--rerank-top", "5"])
    assert code == 0, err
    assert "re-ranked by" in stdout
    plain = api.evaluate(first, ks=[5, 10])
    reranked = api.evaluate(first, ks=[5, 10], rerank=clf, rerank_top=5)
    assert f"{reranked.metrics['ndcg@5']:.4f}" in stdout
    # re-ordering the top 5 keeps its set: HR@5 and every rank outside it are unchanged
    assert reranked.metrics["hr@5"] == plain.metrics["hr@5"]
    outside = plain.ranks >= 5
    assert (reranked.ranks[outside] == plain.ranks[outside]).all()
    assert sorted(reranked.topk[0, :5].tolist()) == sorted(plain.topk[0, :5].tolist())
    # weight 0 on the classifier's log-odds keeps the first stage's order exactly
    kept = api.evaluate(first, ks=[5, 10], rerank=clf, rerank_top=5, rerank_weight=0.0)
    assert (kept.ranks == plain.ranks).all() and (kept.topk == plain.topk).all()
    code, stdout, err = run_cli(["evaluate", str(first), "--rerank", str(clf), "--rerank-weight", "0.5"])
    assert code == 0, err
    assert "0.5 x log-odds" in stdout

    user = pq.read_table(prepared / "users.parquet").column("user_id").to_pylist()[0]
    code, stdout, err = run_cli(["recommend", str(first), "--user", user, "--k", "3", "--rerank", str(clf),
                                 "--rerank-weight", "1"])  # fmt: skip
    assert code == 0, err
    assert "p(behaviour)" in stdout
    code, _, err = run_cli(["evaluate", str(first), "--rerank", str(clf), "--sampled-negatives", "10"])
    assert code == 1 and "drop the sampled negatives" in err


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("rating>>4", "compares 'rating' with '>4', which is not a finite number"),
        ("score>=3", "'score', which is not this dataset's value column"),
        ("type=purchase", "needs an event_type column"),
    ],
)
def test_bad_labels_exit_with_one_sentence(
    write, tmp_path: Path, tiny_bert: Path, run_cli, capsys, label: str, message: str
) -> None:
    log = write(
        "ratings.csv", "user,item,ts,rating\n" + "".join(f"u{i % 5},i{i % 7},{i},{i % 5 + 1}\n" for i in range(60))
    )
    data = tmp_path / "d"
    main(["data", "prepare", str(log), "--split", "temporal", "--cutoff", "0.8", "--out", str(data)])
    capsys.readouterr()
    code, _, err = run_cli(["classify", "train", str(data), "--label", label, "--out", str(tmp_path / "run"),
                        "--encoder", str(tiny_bert)])  # fmt: skip
    assert code == 1
    assert message in err and err.count("\n") <= 2
    assert not (tmp_path / "run").exists()
