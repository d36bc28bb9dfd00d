"""The model registry: numbered versions with metrics and data hash, promotion, rollback, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmrec
from lmrec.cli import main
from lmrec.errors import RunError
from lmrec.registry.versions import ModelRegistry


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two finished runs (pop, instant to train) on a small synthetic log."""
    root = tmp_path_factory.mktemp("registry")
    main(["data", "synth", "--users", "40", "--items", "20", "--events", "600", "--out", str(root / "log.csv")])
    main(["data", "prepare", str(root / "log.csv"), "--out", str(root / "d")])
    for name in ("a", "b"):
        lmrec.train(root / "d", root / name, model="pop", overrides=["eval.ks=[5,10]"])
    return root / "a", root / "b"


def test_add_promote_rollback(runs: tuple[Path, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    assert registry.versions() == [] and registry.promoted() is None
    first = registry.add(runs[0])
    assert first.version == 1 and registry.promoted() is None
    info = json.loads((runs[0] / "run.json").read_text())
    assert first.fingerprint == info["fingerprint"] and first.model == "pop"
    assert first.metrics["test"]["hr@10"] == json.loads((runs[0] / "metrics.json").read_text())["test"]["hr@10"]
    assert (first.path / "model" / "model.pt").is_file() and (first.path / "run.json").is_file()
    second = registry.add(runs[1], promote=True)
    assert second.version == 2 and registry.promoted().version == 2
    registry.promote(1)
    registry.promote(1)  # promoting the served version again changes nothing
    assert registry.promoted().version == 1
    assert registry.rollback().version == 2
    with pytest.raises(RunError, match="nothing to roll back"):
        registry.rollback()
    with pytest.raises(RunError, match="version 7 is not in registry"):
        registry.promote(7)
    index = json.loads(registry.index_file.read_text())
    assert [e["action"] for e in index["log"]] == ["add", "add", "promote", "promote", "promote", "rollback"]
    assert index["stack"] == [2]
    assert not list((tmp_path / "reg" / "versions").glob(".*"))  # no staging folder left behind


def test_unfinished_runs_and_corrupt_indexes_are_refused(runs: tuple[Path, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RunError, match="not an lmrec run directory"):
        registry.add(tmp_path)
    registry.add(runs[0])
    registry.index_file.write_text("{broken")
    with pytest.raises(RunError, match="corrupt"):
        registry.versions()


def test_registry_cli(runs: tuple[Path, Path], tmp_path: Path, run_cli, monkeypatch) -> None:
    def cli(argv: list[str]) -> tuple[int, str]:
        code, out, err = run_cli(argv)
        return code, out + err

    monkeypatch.setenv("LMREC_REGISTRY", str(tmp_path / "env-reg"))
    code, out = cli(["registry", "list"])
    assert code == 0 and "no versions yet" in out
    assert cli(["registry", "add", str(runs[0]), "--promote"])[0] == 0
    code, out = cli(["registry", "add", str(runs[1])])
    assert code == 0 and "added version 2" in out
    code, out = cli(["registry", "promote", "2"])
    assert code == 0 and "promoted version 2" in out
    code, out = cli(["registry", "list"])
    assert code == 0 and "promoted" in out and "hr@10" in out
    code, out = cli(["registry", "rollback"])
    assert code == 0 and "rolled back to version 1" in out
    assert ModelRegistry(tmp_path / "env-reg").promoted().version == 1
    code, out = cli(["registry", "promote", "9", "--registry", str(tmp_path / "env-reg")])
    assert code == 1 and "version 9 is not in registry" in out


@pytest.fixture(scope="module")
def other_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished pop run on another synthetic log (another data fingerprint)."""
    root = tmp_path_factory.mktemp("other")
    main(["data", "synth", "--users", "30", "--items", "15", "--events", "400", "--out", str(root / "log.csv")])
    main(["data", "prepare", str(root / "log.csv"), "--out", str(root / "d")])
    lmrec.train(root / "d", root / "pop", model="pop", overrides=["eval.ks=[5,10]"])
    return root / "pop"


def test_another_dataset_is_promoted_only_when_allowed(
    runs: tuple[Path, Path], other_run: Path, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.add(runs[0], promote=True)
    other = registry.add(other_run)
    with pytest.raises(RunError, match=r"another dataset.*--allow-new-catalogue"):
        registry.promote(other.version)
    with pytest.raises(RunError, match="another dataset"):
        registry.add(other_run, promote=True)
    assert [v.version for v in registry.versions()] == [1, 2] and registry.promoted().version == 1
    registry.promote(other.version, allow_new_catalogue=True)
    assert registry.promoted().version == other.version
    registry.add(runs[1], promote=True, allow_new_catalogue=True)
    assert registry.rollback().version == other.version  # a rollback returns to a state already served
    log = json.loads(registry.index_file.read_text())["log"]
    assert [(e["action"], e.get("new_catalogue", False)) for e in log[-4:]] == [
        ("promote", True), ("add", False), ("promote", True), ("rollback", True)
    ]  # fmt: skip


def test_registry_cli_allows_a_new_catalogue_only_when_asked(
    runs: tuple[Path, Path], other_run: Path, tmp_path: Path, run_cli
) -> None:
    where = ["--registry", str(tmp_path / "reg")]
    assert run_cli(["registry", "add", str(runs[0]), "--promote", *where])[0] == 0
    code, out, err = run_cli(["registry", "add", str(other_run), "--promote", *where])
    assert code == 1 and "--allow-new-catalogue" in out + err
    assert run_cli(["registry", "add", str(other_run), *where])[0] == 0
    code, out, err = run_cli(["registry", "promote", "2", *where])
    assert code == 1 and "another dataset" in out + err
    code, out, _ = run_cli(["registry", "promote", "2", "--allow-new-catalogue", *where])
    assert code == 0 and "promoted version 2" in out


def test_a_file_or_a_malformed_index_is_not_a_registry(runs: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for call in (lambda r: r.versions(), lambda r: r.add(runs[0]), lambda r: r.rollback()):
        with pytest.raises(RunError, match="is a file, not a registry folder"):
            call(ModelRegistry(tmp_path / "file"))
    registry = ModelRegistry(tmp_path / "reg")
    registry.add(runs[0])
    index = json.loads(registry.index_file.read_text())
    for broken in ({**index, "versions": [{"version": "x"}]}, {**index, "promoted": 7}, [1]):
        registry.index_file.write_text(json.dumps(broken))
        with pytest.raises(RunError, match=r"index\.json"):
            registry.versions()


def test_an_unfinished_run_is_not_registered(runs: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "state": "interrupted", "epochs_done": 2}))
    with pytest.raises(
        RunError,
        match="was interrupted after 2 epochs, so its model is the best checkpoint so far; only a finished run",
    ):
        ModelRegistry(tmp_path / "reg").add(run)
