"""`lmrec tune` end to end: a tiny search prints its trials and writes best.yaml; a bad space is one sentence."""

from __future__ import annotations

from pathlib import Path

TINY = ["--set", "train.epochs=2", "--set", "model.max_len=20", "--set", "model.hidden=16"]


def test_tune_prints_the_trials_and_the_best_config(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    space, out = tmp_path / "space.yaml", tmp_path / "tune"
    space.write_text("train.lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    argv = ["tune", str(cyclic_dataset), "--model", "sasrec", "--trials", "2", "--space", str(space)]
    code, stdout, err = run_cli([*argv, "--out", str(out), "--timeout", "600", *TINY])
    assert code == 0, err
    assert "trials of" in stdout and "complete" in stdout and "best trial" in stdout
    assert (out / "best.yaml").is_file() and (out / "study.sqlite3").is_file()

    space.write_text("model.depth: {int: [1, 3]}\n")
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "other"), *TINY])
    assert code == 1 and "model.depth is not a sasrec setting" in err and len(err.strip().splitlines()) == 1
