"""What the command line shows while it trains: plain log lines off a terminal, bars on one, nothing under
--quiet; and the TensorBoard logs and per-epoch history that `train` and `pretrain` leave in their run."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from lmrec.registry.run import RunDir

SAS = ["--model", "sasrec", "--set", "model.hidden=16", "--set", "model.max_len=8", "--set", "eval.ks=[5,10]"]
EPOCH_LINE = re.compile(
    r"^lmrec\.training\.trainer: epoch (\d+)  loss \d+\.\d{4}  valid ndcg@10 \d\.\d{4}  best \d\.\d{4} \(epoch \d+\)$"
)
BAR = re.compile(r"\d+%\|")  # tqdm's "  0%|" / "100%|"


def _events(run: Path) -> list[Path]:
    """The TensorBoard event files of a run."""
    return sorted((run / "logs").glob("events.out.tfevents.*"))


def test_off_a_terminal_each_epoch_is_one_plain_line(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "runs" / "sas"
    code, out, err = run_cli(["train", str(cyclic_dataset), *SAS, "--set", "train.epochs=2", "--out", str(run)])
    assert code == 0, err
    epochs = [int(match.group(1)) for line in err.splitlines() if (match := EPOCH_LINE.match(line))]
    assert epochs == [1, 2], err
    assert "lmrec.training.trainer: stopped by the epoch limit (2)" in err.splitlines()
    assert not BAR.search(err) and "\r" not in err
    assert f"TensorBoard: tensorboard --logdir {tmp_path / 'runs'}" in out
    assert _events(run)
    history = json.loads(RunDir(run).metrics_file.read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1] and all({"loss", "ndcg@10"} <= set(row) for row in history)


def test_early_stopping_says_why(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    settings = ["--set", "train.epochs=10", "--set", "train.patience=1", "--set", "train.lr=1e-12"]
    code, _, err = run_cli(["train", str(cyclic_dataset), *SAS, *settings, "--out", str(tmp_path / "s")])
    assert code == 0, err
    # an lr of 1e-12 changes no rank, so epoch 2 is no better than epoch 1
    assert "stopped by early stopping (1 epochs without a better ndcg@10)" in err


def test_quiet_shows_no_bar_and_no_log_line_even_on_a_terminal(
    cyclic_dataset: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["train", str(cyclic_dataset), *SAS, "--set", "train.epochs=2"]
    code, out, err = run_cli(["--quiet", *argv, "--out", str(tmp_path / "quiet")])
    assert code == 0, err
    assert err == ""
    assert "2 epochs (best epoch" in out and _events(tmp_path / "quiet")
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "loud")])  # the same on a terminal, not quiet
    assert code == 0, err
    assert BAR.search(err) and "epoch 1/2" in err  # a bar per epoch, named like the log lines
    lines = re.split(r"[\r\n]", err)  # tqdm redraws with carriage returns
    assert any(re.match(r"epoch 2  loss \d+\.\d{4}  valid ndcg@10", line) for line in lines)  # unprefixed


def test_pretrain_logs_each_epoch_to_tensorboard_and_metrics(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    out_dir = tmp_path / "runs" / "pre"
    settings = ["--set", "train.epochs=2", "--set", "model.hidden=16", "--set", "model.max_len=8"]
    code, out, err = run_cli(["pretrain", str(cyclic_dataset), "--out", str(out_dir), *settings])
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("lmrec.training.pretrain: ")]
    assert [line.split("  ")[0] for line in lines[:2]] == [
        "lmrec.training.pretrain: epoch 1",
        "lmrec.training.pretrain: epoch 2",
    ]
    assert all(re.search(r"  loss \d+\.\d{4}  valid ndcg@10 \d\.\d{4}  best ", line) for line in lines[:2])
    assert lines[2] == "lmrec.training.pretrain: stopped by the epoch limit (2)"
    assert f"TensorBoard: tensorboard --logdir {tmp_path / 'runs'}" in out
    assert _events(out_dir)
    metrics = json.loads(RunDir(out_dir).metrics_file.read_text())
    assert [row["epoch"] for row in metrics["history"]] == [0, 1]
    assert all({"loss", "seconds", "ndcg@10"} <= set(row) for row in metrics["history"])
    assert metrics["stopped_by"] == "the epoch limit (2)"
