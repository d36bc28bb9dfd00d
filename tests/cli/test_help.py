"""Help that a new user can read at 80 columns: every option has a sentence, no option name is cut, no
internal type names, every model listed; and the end of `lmrec train` says what happened."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from lmrec import cli
from lmrec.cli.run import SHIPPED_MODELS
from lmrec.models.base import model_names


def _leaves(command=None, words: tuple[str, ...] = ()):
    command = command or typer.main.get_command(cli.app)
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            yield from _leaves(sub, (*words, name))
        else:
            yield (*words, name), sub


cli._register_groups()
LEAVES = dict(_leaves())


@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_help_at_80_columns(words: tuple[str, ...], run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli([*words, "--help"])
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "<bool>" not in out and "<list[" not in out, out
    for param in LEAVES[words].params:
        assert param.param_type_name != "option" or param.help, f"{' '.join(words)} {param.opts[0]} has no help"


def test_train_help_lists_every_model_and_where_the_configs_are(run_cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert model_names() == SHIPPED_MODELS
    _, out, _ = run_cli(["train", "--help"])
    assert all(name in out for name in model_names()) and "default: sasrec" in out
    assert "src/lmrec/configs" in out or "lmrec/configs" in out


def test_training_a_model_without_epochs_says_so(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli(["train", str(cyclic_dataset), "--model", "pop", "--out", str(tmp_path / "pop")])
    assert code == 0, err
    assert "no training epochs" in out and "best -1" not in out
    code, out, err = run_cli(
        ["train", str(cyclic_dataset), "--model", "sasrec", "--out", str(tmp_path / "s"), "--set", "train.epochs=2"]
    )
    assert code == 0, err
    assert "2 epochs (best epoch" in out and "stopped by the epoch limit" in out
