"""Training end to end on a tiny learnable dataset: it learns, it is repeatable, it resumes, it refuses bad runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec import api
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, Interrupted, RunError
from lmrec.registry.run import RunDir

FAST = ["model.hidden=32", "model.max_len=8", "train.batch_size=16", "train.lr=0.01", "eval.ks=[1,10]"]


def test_sasrec_learns_the_cycle(cyclic_dataset: Path, tmp_path: Path) -> None:
    metrics = api.train(cyclic_dataset, tmp_path / "run", model="sasrec", overrides=[*FAST, "train.epochs=25"])
    assert metrics["test"]["hr@1"] > 0.9
    assert metrics["epochs"] >= 1 and metrics["train_seconds"] > 0
    run = RunDir(tmp_path / "run")
    assert run.model_file.is_file() and run.last_file.is_file() and run.ranks_file("test").is_file()
    assert any(run.logs_dir.iterdir())
    saved = json.loads(run.metrics_file.read_text())
    assert {
        "model",
        "dataset",
        "valid",
        "test",
        "epochs",
        "seconds_per_epoch",
        "train_seconds",
        "peak_rss_mb",
    } <= set(saved)


def test_same_seed_same_metrics_and_resume_matches(cyclic_dataset: Path, tmp_path: Path) -> None:
    over = [*FAST, "train.epochs=4", "train.patience=100"]
    a = api.train(cyclic_dataset, tmp_path / "a", model="sasrec", overrides=over, seed=1)
    b = api.train(cyclic_dataset, tmp_path / "b", model="sasrec", overrides=over, seed=1)
    assert a["test"] == b["test"]
    api.train(
        cyclic_dataset,
        tmp_path / "c",
        model="sasrec",
        overrides=[*FAST, "train.epochs=2", "train.patience=100"],
        seed=1,
    )
    # A run stopped after 2 of 4 epochs and resumed ends exactly where the uninterrupted run did.
    cfg = (tmp_path / "c" / "config.yaml").read_text().replace("epochs: 2", "epochs: 4")
    (tmp_path / "c" / "config.yaml").write_text(cfg)
    c = api.train(cyclic_dataset, tmp_path / "c", config_file=tmp_path / "c" / "config.yaml", seed=1, resume=True)
    assert c["epochs"] == 4
    assert c["test"] == a["test"]


def test_existing_run_needs_overwrite(cyclic_dataset: Path, tmp_path: Path) -> None:
    over = ["train.epochs=1"]
    api.train(cyclic_dataset, tmp_path / "r", model="pop", overrides=over)
    with pytest.raises(RunError, match="--overwrite"):
        api.train(cyclic_dataset, tmp_path / "r", model="pop", overrides=over)
    api.train(cyclic_dataset, tmp_path / "r", model="pop", overrides=over, overwrite=True)


def test_bad_names_and_keys_are_clear(cyclic_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"known models: .*sasrec"):
        api.train(cyclic_dataset, tmp_path / "x", model="nope")
    with pytest.raises(ConfigError, match=r"model\.hiddn.*allowed keys"):
        api.train(cyclic_dataset, tmp_path / "y", model="sasrec", overrides=["model.hiddn=3"])
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        api.train(cyclic_dataset, tmp_path / "z", model="sasrec", overrides=["train.lrr=3"])


def test_corrupt_checkpoint_is_a_clear_error(cyclic_dataset: Path, tmp_path: Path) -> None:
    api.train(cyclic_dataset, tmp_path / "r", model="sasrec", overrides=[*FAST, "train.epochs=1"])
    run = RunDir(tmp_path / "r")
    run.model_file.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="corrupt"):
        api.Recommender.load(tmp_path / "r")


def test_a_run_refuses_another_preparation(cyclic_dataset: Path, make_prepared, tmp_path: Path) -> None:
    api.train(cyclic_dataset, tmp_path / "r", model="pop", overrides=["train.epochs=1"])
    other = make_prepared(tmp_path / "other", [[1, 2, 3, 4], [2, 3, 4, 5]], 5)
    with pytest.raises(RunError, match="another dataset preparation"):
        api.Recommender.load(tmp_path / "r", data=other)


def test_frozen_parameters_stay_as_they_were(cyclic_dataset: Path, tmp_path: Path) -> None:
    import torch

    first = api.train(cyclic_dataset, tmp_path / "a", model="sasrec", overrides=[*FAST, "train.epochs=1"])
    assert first["epochs"] == 1
    start = RunDir(tmp_path / "a").path / "model" / "model.pt"
    tuned = tmp_path / "b"
    api.train(
        cyclic_dataset, tuned, model="sasrec", init=start, overrides=[*FAST, "train.epochs=2", "train.freeze=[blocks]"]
    )
    before = torch.load(start, weights_only=False)["state_dict"]
    after = torch.load(tuned / "model" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("blocks."))
    assert not torch.equal(before["item_emb.weight"], after["item_emb.weight"])
    with pytest.raises(ConfigError, match="names no parameter"):
        api.train(cyclic_dataset, tmp_path / "c", model="sasrec", overrides=[*FAST, "train.freeze=[blockz]"])


def _interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make training receive SIGINT when epoch `epoch` (0-based) starts, as Ctrl-C would mid-run."""
    import signal

    from lmrec.training.trainer import Trainer

    real = Trainer._epoch

    def epoch_or_interrupt(self, writer) -> None:
        if self.state.epoch == epoch:
            raise Interrupted(signal.SIGINT)
        real(self, writer)

    monkeypatch.setattr(Trainer, "_epoch", epoch_or_interrupt)


def test_an_interrupted_run_is_flagged_and_resumes_as_configured(
    cyclic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    over = [*FAST, "train.epochs=3", "train.patience=100"]
    _interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(Interrupted, match=r"after epoch 1; kept .*last\.pt.*--resume"):
        api.train(cyclic_dataset, tmp_path / "r", model="sasrec", overrides=over)
    run = RunDir(tmp_path / "r")
    assert run.state() == "interrupted" and not run.metrics_file.is_file()
    assert "was interrupted after 1 epoch," in run.unfinished_note()
    config_before = run.config_file.read_text()
    monkeypatch.undo()
    # No override: the saved train.epochs=3 holds (the default config's 200 epochs would not).
    metrics = api.train(cyclic_dataset, tmp_path / "r", model="sasrec", resume=True)
    assert metrics["epochs"] == 3 and run.state() == "finished"
    assert run.config_file.read_text() == config_before
    assert json.loads(run.info_file.read_text())["resumes"] == [{"from_epoch": 1, "changed": {}}]


def test_resume_refuses_a_contradicting_setting_and_records_an_extension(cyclic_dataset: Path, tmp_path: Path) -> None:
    api.train(cyclic_dataset, tmp_path / "r", model="sasrec", overrides=[*FAST, "train.epochs=1"])
    with pytest.raises(ConfigError, match=r"train\.lr=0\.5.*configured with train\.lr=0\.01,"):
        api.train(cyclic_dataset, tmp_path / "r", overrides=["train.lr=0.5"], resume=True)
    with pytest.raises(ConfigError, match=r"model\.name='gru4rec'.*model\.name='sasrec'"):
        api.train(cyclic_dataset, tmp_path / "r", model="gru4rec", resume=True)
    with pytest.raises(ConfigError, match=r"seed=5"):
        api.train(cyclic_dataset, tmp_path / "r", seed=5, resume=True)
    metrics = api.train(cyclic_dataset, tmp_path / "r", overrides=["train.epochs=2"], resume=True)
    assert metrics["epochs"] == 2
    run = RunDir(tmp_path / "r")
    assert run.config().train.epochs == 2
    assert json.loads(run.info_file.read_text())["resumes"][-1]["changed"] == {"train.epochs": [1, 2]}


@pytest.mark.parametrize(
    ("model", "overrides"),
    [("nosuch", []), ("sasrec", ["model.hidden=abc"]), ("sasrec", ["train.freeze=[nothing]"])],
)
def test_a_failed_start_leaves_no_run_folder(cyclic_dataset: Path, tmp_path: Path, model: str, overrides) -> None:
    with pytest.raises(ConfigError):
        api.train(cyclic_dataset, tmp_path / "r", model=model, overrides=[*FAST, *overrides])
    assert not (tmp_path / "r").exists()
    api.train(cyclic_dataset, tmp_path / "r", model="pop", overrides=["train.epochs=1"])  # the corrected command


def test_a_run_interrupted_before_its_first_epoch_is_removed(
    cyclic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_at_epoch(monkeypatch, 0)
    with pytest.raises(Interrupted, match="nothing was kept"):
        api.train(cyclic_dataset, tmp_path / "r", model="sasrec", overrides=FAST)
    assert not (tmp_path / "r").exists()


def test_the_time_budget_does_not_start_an_epoch_that_would_not_fit(cyclic_dataset: Path, tmp_path: Path) -> None:
    from lmrec.config import build_config
    from lmrec.training.trainer import Trainer

    config = build_config("sasrec", overrides=[*FAST, "train.max_seconds=10"])
    trainer = Trainer(PreparedDataset.load(cyclic_dataset), config, RunDir(tmp_path / "r"), progress=False)
    trainer.state.epoch, trainer.state.train_seconds, trainer._epoch_seconds = 2, 8.0, [4.0, 4.0]
    assert trainer._stop_reason().startswith("the time budget")
    trainer.state.train_seconds, trainer._epoch_seconds = 4.0, [2.0, 2.0]
    assert trainer._stop_reason() == ""
    trainer.state.epoch = config.train.epochs
    assert trainer._stop_reason().startswith("the epoch limit")


def test_a_keyboard_interrupt_in_library_use_flags_the_run_too(
    cyclic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.training.trainer import Trainer

    real = Trainer._epoch

    def epoch_or_ctrl_c(self, writer) -> None:
        if self.state.epoch == 1:
            raise KeyboardInterrupt
        real(self, writer)

    monkeypatch.setattr(Trainer, "_epoch", epoch_or_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        api.train(cyclic_dataset, tmp_path / "r", model="sasrec", overrides=[*FAST, "train.epochs=3"])
    assert RunDir(tmp_path / "r").state() == "interrupted"
