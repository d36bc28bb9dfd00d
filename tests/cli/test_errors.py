"""Every mistake at the command line gets an honest exit and a message that names it, never a traceback;
SIGINT and SIGTERM exit 130 and 143 with one line saying what was kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrec import __version__, api

FAST = ["--set", "model.hidden=16", "--set", "model.max_len=8", "--set", "train.batch_size=16"]


@pytest.fixture
def pop_run(cyclic_dataset: Path, tmp_path: Path) -> Path:
    api.train(cyclic_dataset, tmp_path / "pop", model="pop")
    return tmp_path / "pop"


def _usage_mistakes(data: Path, run: Path) -> list[tuple[list[str], str]]:
    return [
        ([], "Usage: lmrec [OPTIONS] COMMAND"),
        (["data"], "Usage: lmrec data"),
        (["registry"], "Usage: lmrec registry"),
        (["classify"], "Usage: lmrec classify"),
        (["train"], "Missing argument 'data'"),
        (["train", str(data), "--bogus"], "No such option: --bogus"),
        (["recommend", str(run), "--user", "u1", "--k", "abc"], "Invalid value for '--k'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["registry", "promote", "-1"], "No such option: -1"),
        (["registry", "promote", "abc"], "Invalid value for 'version'"),
        (["data", "prepare"], "Missing argument 'source'"),
    ]


def test_usage_errors_show_the_usage_and_exit_2(cyclic_dataset: Path, pop_run: Path, run_cli) -> None:
    for argv, expected in _usage_mistakes(cyclic_dataset, pop_run):
        code, out, err = run_cli(argv)
        assert code == 2, argv
        assert expected in out + err, (argv, out, err)
        assert "Traceback" not in out + err, argv


def test_version(run_cli) -> None:
    assert run_cli(["--version"])[:2] == (0, f"lmrec {__version__}\n")


def test_malformed_yaml_is_one_sentence_naming_the_file_and_line(
    cyclic_dataset: Path, pop_run: Path, tmp_path: Path, run_cli
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    cases = [
        (["train", str(cyclic_dataset), "--out", str(tmp_path / "a"), "--config", str(bad)], "bad.yaml is not valid"),
        (["train", str(cyclic_dataset), "--out", str(tmp_path / "b"), "--set", "model.hidden=[1"], "--set model"),
    ]
    for argv, expected in cases:
        code, _, err = run_cli(argv)
        assert code == 1 and expected in err and "line" in err and "Traceback" not in err, err
        assert not Path(argv[3]).exists()  # a refused start leaves no run folder
    config = pop_run / "config.yaml"
    for text, expected in [
        ("model: {name: pop\n", "not valid YAML: line 2"),
        ("seed: !!python/name:os.system\n", "python/name"),
    ]:
        config.write_text(text)
        code, _, err = run_cli(["evaluate", str(pop_run)])
        assert code == 1 and "config.yaml" in err and expected in err and "Traceback" not in err, err


def test_an_interrupted_command_says_so_and_exits_130(
    cyclic_dataset: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmrec.data import prepare
    from lmrec.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(prepare, "prepare", interrupted)
    code, _, err = run_cli(["data", "prepare", str(cyclic_dataset), "--out", str(tmp_path / "d")])
    assert code == 130 and "lmrec data prepare: interrupted by SIGINT; nothing was written" in err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_training_with_what_was_kept(cyclic_dataset: Path, tmp_path: Path, sig, code: int) -> None:
    run = tmp_path / "run"
    argv = ["train", str(cyclic_dataset), "--model", "sasrec", "--out", str(run), *FAST]
    argv += ["--set", "train.epochs=100000", "--set", "train.patience=100000"]
    env = {**os.environ, "LMREC_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "lmrec", *argv], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "training interrupted after epoch" in err and "--resume" in err and "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["state"] == "interrupted"


def test_a_signal_during_a_checkpoint_write_is_raised_once_the_file_is_whole(tmp_path: Path) -> None:
    import torch

    from lmrec.atomic import atomic_write
    from lmrec.errors import Interrupted
    from lmrec.runtime import signals_interrupt

    def write(handle) -> None:
        torch.save({"a": torch.zeros(3)}, handle)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write
        torch.save({"b": torch.ones(3)}, handle)

    with signals_interrupt(), pytest.raises(Interrupted) as caught:
        atomic_write(tmp_path / "ckpt.pt", write)
    assert caught.value.exit_code == 143
    assert (tmp_path / "ckpt.pt").is_file()


def test_a_stopped_server_exits_0_saying_so(pop_run: Path, tmp_path: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["serve", str(pop_run), "--port", str(port), "--store", f"sqlite:///{tmp_path / 'events.sqlite'}"]
    process = subprocess.Popen([sys.executable, "-m", "lmrec", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert b"stopped by SIGTERM after a graceful shutdown" in out and b"Traceback" not in err


def test_outputs_of_the_wrong_kind_are_one_sentence(
    cyclic_dataset: Path, pop_run: Path, tmp_path: Path, run_cli
) -> None:
    (tmp_path / "a-file").write_text("")
    code, _, err = run_cli(["train", str(cyclic_dataset), "--model", "pop", "--out", str(tmp_path / "a-file")])
    assert code == 1 and "is a file, not a run folder" in err
    code, _, err = run_cli(["recommend", str(pop_run), "--all-users", "--out", str(tmp_path)])
    assert code == 1 and "is a folder; give the file to write" in err


def test_signals_after_the_first_do_not_cut_the_cleanup_short() -> None:
    from lmrec.errors import Interrupted
    from lmrec.runtime import signals_interrupt

    with signals_interrupt():
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while what was kept is being recorded
        time.sleep(0.05)
