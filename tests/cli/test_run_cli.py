"""`lmrec train / evaluate / compare / recommend` end to end on a small synthetic log."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.inference.recommender import Recommender
from synth_helpers import synth_prepared

TINY = ["--set", "train.epochs=2", "--set", "model.max_len=20", "--set", "eval.ks=[5,10]"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic log prepared with the default leave-one-out split."""
    return synth_prepared(tmp_path_factory.mktemp("cli"), users=150, items=80, events=4000)


def test_train_evaluate_compare_recommend(prepared: Path, tmp_path: Path, run_cli) -> None:
    sas, pop = tmp_path / "sas", tmp_path / "pop"
    code, out, err = run_cli(
        ["train", str(prepared), "--model", "sasrec", "--out", str(sas), *TINY, "--set", "model.hidden=16"]
    )
    assert code == 0, err
    metrics = json.loads((sas / "metrics.json").read_text())
    assert metrics["model"] == "sasrec" and metrics["epochs"] == 2
    assert 0 <= metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"] <= 1
    assert run_cli(["train", str(prepared), "--model", "pop", "--out", str(pop), *TINY])[0] == 0

    code, out, _ = run_cli(["evaluate", str(sas), "--k", "5,10"])
    assert code == 0 and "ndcg@10" in out and "hr@5" in out

    code, out, _ = run_cli(["evaluate", str(sas), "--sampled-negatives", "20"])
    assert code == 0 and "sampled_ndcg@10" in out

    code, out, _ = run_cli(["compare", str(sas), str(pop)])
    assert code == 0 and "Δ" in out

    users = pq.read_table(prepared / "users.parquet").column("user_id").to_pylist()
    code, out, err = run_cli(["recommend", str(sas), "--user", users[0], "--k", "5", "--explain"])
    assert code == 0, err
    assert "because of (occlusion)" in out

    recs = tmp_path / "recs.parquet"
    code, out, _ = run_cli(["recommend", str(sas), "--all-users", "--k", "3", "--out", str(recs)])
    table = pq.read_table(recs)
    assert code == 0 and table.num_rows == 3 * len(users)
    assert set(table.column("user_id").to_pylist()) == set(users)


def test_recommend_explain_prints_the_titles_of_the_past_events_as_text(make_prepared, tmp_path, run_cli) -> None:
    sequences = [[(start + t) % 12 + 1 for t in range(12)] for start in range(30)]
    data = make_prepared(tmp_path / "data", sequences, 12)
    items = pq.read_table(data / "items.parquet")
    pq.write_table(
        items.append_column("title", pa.array([f"[red]t{i}[/red]" for i in range(1, 13)])), data / "items.parquet"
    )
    run = tmp_path / "sas"
    assert (
        run_cli(["train", str(data), "--model", "sasrec", "--out", str(run), *TINY, "--set", "model.hidden=16"])[0] == 0
    )
    code, out, err = run_cli(["recommend", str(run), "--user", "u0", "--k", "2", "--explain"])
    assert code == 0, err
    recs = Recommender.load(run).recommend("u0", k=2, explain=True)
    assert all(rec.because for rec in recs)
    for title in {rec.title for rec in recs} | {event.title for rec in recs for event in rec.because}:
        assert title in out  # printed as it is, not read as rich markup


def test_user_errors_are_one_sentence(prepared: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["train", str(prepared), "--model", "nope", "--out", str(tmp_path / "x")])
    assert code == 1 and "known models" in err and "Traceback" not in err
    code, _, err = run_cli(
        ["train", str(prepared), "--model", "sasrec", "--out", str(tmp_path / "y"), "--set", "model.layerz=3"]
    )
    assert code == 1 and "model.layerz" in err
    code, _, err = run_cli(["train", str(tmp_path / "nothing"), "--model", "pop", "--out", str(tmp_path / "z")])
    assert code == 1 and "not a prepared dataset" in err
    pop = tmp_path / "pop"
    assert run_cli(["train", str(prepared), "--model", "pop", "--out", str(pop), *TINY])[0] == 0
    code, _, err = run_cli(["train", str(prepared), "--model", "pop", "--out", str(pop), *TINY])
    assert code == 1 and "--overwrite" in err
    code, _, err = run_cli(["recommend", str(pop), "--user", "no-such-user"])
    assert code == 1 and "unknown user" in err
    code, _, err = run_cli(["recommend", str(pop), "--user", "x", "--explain"])
    assert code == 1 and "cannot explain" in err
    code, _, err = run_cli(["evaluate", str(tmp_path / "missing-run")])
    assert code == 1 and "not an lmrec run" in err
