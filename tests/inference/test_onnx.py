"""ONNX export of a run and the ONNX Runtime model the service holds in its place (lmrec.inference.onnx)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lmrec
from lmrec.errors import BackendUnsupported, ConfigError, RunError
from lmrec.inference.onnx import ENCODER, ITEMS, MANIFEST, OnnxModel, with_backend
from lmrec.inference.recommender import Recommender
from lmrec.registry.run import RunDir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = ["train.epochs=1", "model.max_len=20", "model.hidden=16"]  # the shared tiny run's settings, one epoch


@pytest.fixture(scope="module")
def exports(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx-exports")
    lmrec.export(tiny_run, root / "float")
    lmrec.export(tiny_run, root / "int8", int8=True)
    return {"float": root / "float", "int8": root / "int8"}


def windows(recommender: Recommender) -> torch.Tensor:
    """Every user's served window (last max_len events), right-aligned."""
    dataset, width = recommender.dataset, recommender.model.max_len
    rows = torch.zeros(dataset.n_users, width, dtype=torch.long)
    for user in range(dataset.n_users):
        sequence = dataset.sequence(user)[-width:]
        rows[user, width - len(sequence) :] = torch.as_tensor(sequence)
    return rows


def load(run: Path, folder: Path) -> tuple[Recommender, OnnxModel]:
    recommender = Recommender.load(run)
    return recommender, OnnxModel.load(folder, recommender.run, recommender.dataset.fingerprint)


def top10(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Top 10 with seen items excluded, as served."""
    scores = scores.clone().scatter_(1, history, float("-inf"))
    return scores.topk(10, dim=1).indices


def test_float_export_scores_as_torch(tiny_run: Path, exports: dict[str, Path]) -> None:
    recommender, model = load(tiny_run, exports["float"])
    history = windows(recommender)
    with torch.inference_mode():
        expected = recommender.model.score_all(history, (history > 0).sum(1))
    scores = model.score_all(history, None)
    assert torch.isinf(scores[:, 0]).all()
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-4, rtol=0)
    assert torch.equal(top10(scores, history), top10(expected, history))
    assert hasattr(model, "seen_weight") and model.seen_weight.item() == pytest.approx(
        recommender.model.seen_weight.item()
    )
    # shorter windows are padded on the left, as the Engine passes them
    short = history[:5, -3:]
    with torch.inference_mode():
        assert torch.allclose(model.score_all(short, None)[:, 1:], recommender.model.score_all(short, None)[:, 1:],
                              atol=1e-4)  # fmt: skip
    assert model.hidden(short).shape == (5, 1, 16)
    assert torch.equal(model.output_embeddings(), recommender.model.output_embeddings().detach())
    manifest = json.loads((exports["float"] / MANIFEST).read_text())
    assert manifest["model"] == "sasrec" and manifest["precision"] == "float32" and manifest["max_len"] == 20
    assert manifest["dataset"]["fingerprint"] == recommender.dataset.fingerprint
    assert set(manifest["files"]) == {ENCODER, ITEMS} and manifest["opset"] >= 17
    with pytest.raises(BackendUnsupported, match="explanations need the torch model"):
        model.explain(short, None, torch.ones(5, 3, dtype=torch.long))


def test_int8_keeps_the_top_10(tiny_run: Path, exports: dict[str, Path]) -> None:
    recommender, floating = load(tiny_run, exports["float"])
    _, quantised = load(tiny_run, exports["int8"])
    history = windows(recommender)
    ours, theirs = top10(quantised.score_all(history, None), history), top10(floating.score_all(history, None), history)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ours.tolist(), theirs.tolist(), strict=True)])
    assert recall >= 0.9
    manifest = json.loads((exports["int8"] / MANIFEST).read_text())
    assert manifest["precision"] == "int8" and "items.npy float32" in manifest["quantisation"]
    assert (exports["int8"] / ENCODER).stat().st_size < (exports["float"] / ENCODER).stat().st_size
    assert np.load(exports["int8"] / ITEMS, allow_pickle=False).dtype == np.float32


def test_a_tampered_file_is_refused(tiny_run: Path, exports: dict[str, Path], tmp_path: Path) -> None:
    run = RunDir(tiny_run)
    fingerprint = Recommender.load(tiny_run).dataset.fingerprint
    for name in (ITEMS, ENCODER):
        folder = tmp_path / name
        folder.mkdir()
        for file in (ENCODER, ITEMS, MANIFEST):
            (folder / file).write_bytes((exports["float"] / file).read_bytes())
        content = bytearray((folder / name).read_bytes())
        content[-1] ^= 1
        (folder / name).write_bytes(bytes(content))
        with pytest.raises(RunError, match=rf"{name} does not match the SHA-256 its manifest records"):
            OnnxModel.load(folder, run, fingerprint)
    with pytest.raises(RunError, match="another dataset preparation"):
        OnnxModel.load(exports["float"], run, "0" * 64)
    with pytest.raises(RunError, match="holds no ONNX export"):
        OnnxModel.load(tmp_path / "nothing", run, fingerprint)


def test_an_export_of_another_model_is_refused(prepared: Path, tiny_run: Path, exports, tmp_path: Path) -> None:
    other = tmp_path / "other"
    lmrec.train(prepared, other, model="sasrec", overrides=TINY)
    with pytest.raises(RunError, match="made from another model"):
        with_backend(Recommender.load(other), "onnx", exports["float"])
    with pytest.raises(ConfigError, match="unknown serving backend"):
        with_backend(Recommender.load(other), "tensorrt")


def test_pop_refuses(prepared: Path, tmp_path: Path) -> None:
    lmrec.train(prepared, tmp_path / "pop", model="pop")
    with pytest.raises(ConfigError, match="model pop does not score a history as a sequence encoder's last state"):
        lmrec.export(tmp_path / "pop", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "settings"), [("gru4rec", []), ("bert4rec", []), ("lmrec", ["model.use_text=false"])]
)
def test_other_encoders_export(prepared: Path, tmp_path: Path, model: str, settings: list[str]) -> None:
    run = tmp_path / model
    lmrec.train(prepared, run, model=model, overrides=["train.epochs=1", "model.max_len=20", *settings])
    manifest = lmrec.export(run, tmp_path / "out")
    assert manifest["check"]["max_abs_diff_vs_torch"] <= 1e-4
    recommender, onnx = load(run, tmp_path / "out")
    history = windows(recommender)
    with torch.inference_mode():
        expected = recommender.model.score_all(history, (history > 0).sum(1))
    assert torch.allclose(onnx.score_all(history, None)[:, 1:], expected[:, 1:], atol=1e-4, rtol=0)
