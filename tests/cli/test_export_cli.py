"""`lmrec export RUN --format onnx` and the serve options that use an export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SASRec and a Pop run on a small synthetic log."""
    root = tmp_path_factory.mktemp("export-cli")
    main(["data", "synth", "--users", "100", "--items", "50", "--events", "2500", "--out", str(root / "log.csv")])
    main(["data", "prepare", str(root / "log.csv"), "--items", str(root / "log.items.csv"), "--out", str(root / "d")])
    tiny = ["--set", "train.epochs=1", "--set", "model.max_len=10", "--set", "model.hidden=16"]
    main(["train", str(root / "d"), "--model", "sasrec", "--out", str(root / "sasrec"), *tiny])
    main(["train", str(root / "d"), "--model", "pop", "--out", str(root / "pop")])
    return {"sasrec": root / "sasrec", "pop": root / "pop"}


def test_export_onnx_int8(runs: dict[str, Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "export"
    code, stdout, err = run_cli(["export", str(runs["sasrec"]), "--format", "onnx", "--int8", "--out", str(out)])
    assert code == 0, err
    assert "exported sasrec (int8, opset" in stdout and f"--backend onnx --export {out}" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["max_len"] == 10
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "items.npy", "manifest.json"]

    code, _, err = run_cli(["export", str(runs["sasrec"]), "--out", str(out)])
    assert code == 1 and "already holds an export; pass --overwrite" in err
    assert run_cli(["export", str(runs["sasrec"]), "--out", str(out), "--overwrite"])[0] == 0
    assert json.loads((out / "manifest.json").read_text())["precision"] == "float32"


def test_export_default_folder_and_refusals(runs: dict[str, Path], tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["export", str(runs["sasrec"])])
    assert code == 0, err
    assert (runs["sasrec"] / "export" / "manifest.json").is_file()
    code, _, err = run_cli(["export", str(runs["pop"]), "--out", str(tmp_path / "pop")])
    assert code == 1 and "model pop does not score a history" in err and "torch" in err
    code, _, err = run_cli(["export", str(runs["sasrec"]), "--format", "tflite", "--out", str(tmp_path / "t")])
    assert code == 1 and "--format tflite is not supported" in err
    code, _, err = run_cli(["serve", str(runs["sasrec"]), "--export", str(tmp_path)])
    assert code == 1 and "add --backend onnx" in err
    code, _, err = run_cli(["serve", str(runs["sasrec"]), "--backend", "tensorrt"])
    assert code == 1 and "--backend must be torch or onnx" in err
