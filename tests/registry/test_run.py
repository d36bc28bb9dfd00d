"""Run directories: checkpoints that carry code are refused unread, unreadable records are one sentence,
the lock keeps a second training out, and the recorded state tells a finished run from an unfinished one."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from lmrec import api
from lmrec.errors import RunError
from lmrec.registry.run import RunDir, load_checkpoint

FAST = ["model.hidden=16", "model.max_len=8", "train.batch_size=16", "eval.ks=[1,10]"]


class _Payload:
    """Pickles as a call of os.system: loading it with a full unpickler would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload_checkpoint(path: Path, marker: Path, template: dict | None = None) -> None:
    """A checkpoint shaped like lmrec's whose state dict carries a code-running pickle payload."""
    state = dict(template or {"model": "pop", "params": {}, "n_items": 1})
    state["state_dict"] = _Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.fixture
def trained(cyclic_dataset: Path, tmp_path: Path) -> Path:
    """A finished one-epoch SASRec run."""
    api.train(cyclic_dataset, tmp_path / "run", model="sasrec", overrides=[*FAST, "train.epochs=1"])
    return tmp_path / "run"


def test_a_checkpoint_carrying_code_is_refused_and_never_runs(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    run = RunDir(trained)
    template = torch.load(run.model_file, weights_only=True)
    write_payload_checkpoint(run.model_file, marker, {k: v for k, v in template.items() if k != "state_dict"})
    with pytest.raises(RunError, match="refused unread"):
        api.Recommender.load(trained)
    with pytest.raises(RunError, match="refused unread"):
        api.load_pretrained(run.model_file)
    write_payload_checkpoint(run.last_file, marker)
    with pytest.raises(RunError, match="refused unread"):
        load_checkpoint(run.last_file)
    assert not marker.exists()
    # The same file loaded the unsafe way does run the payload: the test would notice a regression.
    torch.load(run.last_file, weights_only=False)
    assert marker.exists()


def test_checkpoint_that_is_not_a_dict_or_is_garbage_is_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(RunError, match="not an lmrec checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"garbage bytes, not a pickle")
    with pytest.raises(RunError, match=r"is corrupt \(not a checkpoint\)"):
        load_checkpoint(tmp_path / "garbage.pt")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("run.json", "{not json", r"run\.json \(the run's record\) is corrupt or unreadable"),
        ("run.json", "[1, 2]", "does not hold a JSON object"),
        ("metrics.json", "\x00\x01", r"metrics\.json \(the run's metrics\) is corrupt or unreadable"),
        ("config.yaml", "model: [unclosed", r"config\.yaml is not valid YAML: line 1"),
        ("config.yaml", "model: !!python/object/apply:os.system [echo hi]", "python/object/apply"),
    ],
)
def test_unreadable_run_records_are_one_sentence(trained: Path, name: str, content: str, expected: str) -> None:
    (trained / name).write_text(content)
    run = RunDir(trained)
    with pytest.raises(Exception, match=expected) as caught:
        {"run.json": run.info, "metrics.json": run.metrics, "config.yaml": run.config}[name]()
    assert isinstance(caught.value, RunError | api.ConfigError)


def test_a_second_training_of_a_locked_run_is_refused(trained: Path, cyclic_dataset: Path) -> None:
    run = RunDir(trained)
    with run.lock():
        with pytest.raises(RunError, match="in use by another lmrec process"):
            api.train(cyclic_dataset, trained, model="sasrec", overrides=[*FAST, "train.epochs=2"], resume=True)
        with pytest.raises(RunError, match="in use by another lmrec process"):
            api.train(cyclic_dataset, trained, model="sasrec", overrides=FAST, overwrite=True)
        assert run.state() == "finished"
    assert run.model_file.is_file() and run.metrics_file.is_file()  # the refused overwrite deleted nothing


def test_state_tells_finished_running_and_killed_apart(trained: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = RunDir(trained)
    assert run.state() == "finished" and run.unfinished_note() is None
    info = json.loads(run.info_file.read_text())
    run.info_file.write_text(json.dumps({**info, "state": "running"}))
    assert run.state() == "killed"  # marked running, but no process holds its lock
    with run.lock():
        assert run.state() == "running"
    with caplog.at_level(logging.WARNING):
        api.Recommender.load(trained)
    assert "was killed during training" in caplog.text
