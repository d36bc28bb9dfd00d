"""`lmrec.tune`: Optuna trials on tiny data, the study resumed from SQLite, pruning through the trainer's
validation hook, best.yaml accepted by `lmrec train --config`, and one-sentence errors for bad search spaces."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna
import pytest
import yaml

from lmrec.errors import ConfigError, Interrupted
from lmrec.registry.run import RunDir
from lmrec.training.runs import train
from lmrec.training.tune import tune

TINY = ["train.epochs=2", "model.max_len=20", "model.hidden=16", "eval.ks=[5,10]"]
SPACE = "model.dropout: {float: [0.0, 0.3]}\ntrain.lr: {float: [1.0e-3, 1.0e-2], log: true}\n"


@pytest.fixture
def space(tmp_path: Path) -> Path:
    """A two-key search space small enough for tiny trials."""
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_search_writes_study_and_best_config_and_resumes(cyclic_dataset: Path, space: Path, tmp_path, run_cli) -> None:
    out = tmp_path / "tune"
    summary = tune(cyclic_dataset, out, model="sasrec", trials=3, space=space, overrides=TINY)
    assert (out / "study.sqlite3").is_file() and summary["ran"] == 3
    assert [t["state"] for t in summary["trials"]] == ["complete"] * 3
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == max(t["value"] for t in summary["trials"])
    config = yaml.safe_load((out / "best.yaml").read_text())
    assert config["model"]["dropout"] == pytest.approx(best["params"]["model.dropout"])
    assert config["train"]["epochs"] == 2 and config["model"]["hidden"] == 16

    again = tmp_path / "again"
    code, _, err = run_cli(["train", str(cyclic_dataset), "--config", str(out / "best.yaml"), "--out", str(again)])
    assert code == 0, err
    assert RunDir(again).config() == RunDir(out / "trials" / str(best["trial"])).config()

    resumed = tune(cyclic_dataset, out, model="sasrec", trials=4, space=space, overrides=TINY)
    assert resumed["ran"] == 1 and [t["number"] for t in resumed["trials"]] == [0, 1, 2, 3]
    assert resumed["trials"][3]["params"] not in [t["params"] for t in summary["trials"]]
    assert tune(cyclic_dataset, out, model="sasrec", trials=4, space=space, overrides=TINY)["ran"] == 0

    with pytest.raises(ConfigError, match="differs in its config"):
        tune(cyclic_dataset, out, model="sasrec", trials=5, space=space, overrides=[*TINY, "train.epochs=3"])


def test_a_trial_below_the_pruning_threshold_is_pruned_after_its_first_validation(
    cyclic_dataset: Path, space: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tune"
    summary = tune(
        cyclic_dataset, out, trials=1, space=space, overrides=TINY, pruner=optuna.pruners.ThresholdPruner(lower=1.1)
    )
    assert [t["state"] for t in summary["trials"]] == ["pruned"] and summary["best"] is None
    assert not (out / "best.yaml").exists()
    metrics = json.loads((out / "trials" / "0" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["stopped_by"].startswith("pruning by the search")


class _Interrupting(optuna.pruners.BasePruner):
    """A pruner that is interrupted (as by Ctrl-C) when the trial first asks it."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        raise Interrupted(signal.SIGINT)


def test_an_interrupted_trial_fails_and_the_rerun_goes_on(cyclic_dataset: Path, space: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    with pytest.raises(Interrupted) as info:
        tune(cyclic_dataset, out, trials=1, space=space, overrides=TINY, pruner=_Interrupting())
    assert "search interrupted in trial 0" in info.value.message and "rerun the same command" in info.value.message
    summary = tune(cyclic_dataset, out, trials=1, space=space, overrides=TINY)
    assert [t["state"] for t in summary["trials"]] == ["fail", "complete"] and summary["ran"] == 1


def test_the_validation_hook_sees_every_validation_and_can_stop_training(cyclic_dataset: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []

    def record(epoch: int, metrics: dict[str, float]) -> str | None:
        seen.append((epoch, metrics["ndcg@10"]))
        return None

    config = ["train.epochs=3", "model.max_len=20", "model.hidden=16"]
    metrics = train(cyclic_dataset, tmp_path / "all", model="sasrec", overrides=config, on_validation=record)
    assert [epoch for epoch, _ in seen] == [0, 1, 2] and metrics["epochs"] == 3
    assert [value for _, value in seen] == [row["ndcg@10"] for row in metrics["history"]]

    stopped = train(
        cyclic_dataset, tmp_path / "stop", model="sasrec", overrides=config, on_validation=lambda e, m: "a test"
    )
    assert stopped["epochs"] == 1 and stopped["stopped_by"] == "a test"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model.colour: {choice: [red, blue]}\n", "model.colour is not a sasrec setting"),
        ("optimiser.lr: {float: [0.1, 0.2]}\n", "is not a dotted config key"),
        ("model.hidden: {uniform: [16, 32]}\n", "needs exactly one of int, float or choice"),
        ("model.hidden: {int: [32, 16]}\n", "the range [32, 16] is empty"),
        ("model.hidden: {int: [16, 32], steps: 8}\n", "unknown option 'steps'"),
        ("train.lr: {float: [0.0, 0.1], log: true}\n", "a log scale needs a range above zero"),
        ("train.lr: {float: [-1.0, 0.1]}\n", "train.lr = -1.0 is not valid"),
        ("model.layers: {choice: []}\n", "choice must be a non-empty list"),
        ("", "is empty"),
    ],
)
def test_a_bad_search_space_is_one_sentence(cyclic_dataset: Path, tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        tune(cyclic_dataset, tmp_path / "tune", space=path, overrides=TINY)
    message = str(info.value)
    assert says in message and str(path) in message
    assert "\n" not in message and message.endswith(".")
    assert not (tmp_path / "tune" / "study.sqlite3").exists()


def test_nested_model_settings_are_searchable_and_checked(tmp_path: Path) -> None:
    from lmrec.config import build_config
    from lmrec.training.search import load_space, trial_config

    base = build_config("lmrec", None, [])
    path = tmp_path / "space.yaml"
    path.write_text("model.neighbourhood_weight: {float: [1, 10]}\nmodel.neighbourhood.decay: {choice: [0.3, 0.5]}\n")
    assert [d.key for d in load_space(path, base)] == ["model.neighbourhood_weight", "model.neighbourhood.decay"]
    config = trial_config(base, {"model.neighbourhood_weight": 7.0, "model.neighbourhood.decay": 0.5})
    assert config.model["neighbourhood_weight"] == 7.0 and config.model["neighbourhood"] == {"decay": 0.5}
    path.write_text("model.neighbourhood.recnet: {choice: [2, 3]}\n")
    with pytest.raises(ConfigError, match=r"model\.neighbourhood\.recnet"):
        load_space(path, base)
