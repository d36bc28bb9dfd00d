"""A run exported for serving with ONNX Runtime, and the model the service holds in its place.

An export (`lmrec export RUN --format onnx`, `lmrec.export`) is a folder of three files:

- `encoder.onnx`: the sequence encoder. Input `items` `[batch, max_len]` int64, right-aligned item ids (0 =
  padding); output `query` `[batch, d]` float32, the vector that the item table scores: the last position's
  hidden state (SASRec, GRU4Rec, lmrec), or BERT4Rec's output head at the [MASK] slot after the history with a
  constant 1 appended (its item bias rides in the table's last column). The batch axis is dynamic.
- `items.npy`: the item table `[n_items + 1, d]` float32 (`output_embeddings()`; an lmrec model's text-derived
  table computed once), saved without pickle and read with `allow_pickle=False`.
- `manifest.json`: the model, the run's dataset preparation (fingerprint), the SHA-256 of the run's model file
  and of each file above, max_len, the opset, the precision, the learned seen-item bias (`seen_weight`, added to
  items already in the window, as `score_all` does), and the export's own check against torch.

Scores are `query · items.T` (+ `seen_weight` on the window's items; column 0 is -inf): exactly what the
models' `score_all` computes, which the export checks on real histories of the dataset before it writes
anything. With `int8`, ONNX Runtime's dynamic quantisation turns the encoder's weights (matrix products and
input item embeddings) into int8; the item table stays float32, since ranking is decided by its products and it
is one matrix-vector product per request.

`OnnxModel` is what the serving `Engine` uses of a model (`score_all`, `score`, `hidden`, `output_embeddings`,
`max_len`, `name`, `seen_weight`), computed by the ONNX session, so the Engine holds it where it would hold the
torch model. It cannot explain (occlusion runs through the torch model): `explain` raises `BackendUnsupported`.
Loading checks every file's hash and that the export belongs to the served run (its model file) and dataset.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmrec.atomic import atomic_write, atomic_write_json, read_json_object
from lmrec.data.registry import sha256_file
from lmrec.errors import BackendUnsupported, ConfigError, RunError
from lmrec.inference.recommender import Recommender
from lmrec.models.base import NEG_INF, SequentialRecommender
from lmrec.registry.run import RunDir
from lmrec.version import __version__

log = logging.getLogger(__name__)

FORMAT = "lmrec-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENCODER = "encoder.onnx"
ITEMS = "items.npy"
OPSET = 20
EXPORT_DIR = "export"  # default folder of an export inside its run directory
BACKENDS = ("torch", "onnx")
CHECK_USERS = 64  # dataset histories the export scores with torch and ONNX Runtime before writing
CHECK_TOLERANCE = 1e-4  # largest score difference allowed, relative to the largest score (at least 1)
CHECK_TOP = 10


# -- export ------------------------------------------------------------------------------------------------


class _LastState(nn.Module):
    """`hidden(items)[:, -1]`: the query of models that score their last hidden state against the item table."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: Tensor) -> Tensor:
        return self.model.hidden(items)[:, -1]


class _MaskSlot(nn.Module):
    """BERT4Rec's query: the output head at the [MASK] slot after the history, with the 1 that meets the bias."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: Tensor) -> Tensor:
        model = self.model
        return model._query(model._encode(model._with_mask_slot(items)))[:, -1]


def query_module(model: SequentialRecommender) -> nn.Module:
    """The module from a window of item ids to the vector the item table scores; refuses other models."""
    if model.name == "bert4rec":
        return _MaskSlot(model)
    if model.scores_by_table:
        return _LastState(model)
    if getattr(model, "neighbourhood", None) is not None:
        raise ConfigError(
            f"model {model.name} adds item-kNN votes (model.neighbourhood_weight > 0) to its table's scores, which "
            "an ONNX export of the table cannot hold; serve it with the torch backend (lmrec serve RUN)."
        )
    raise ConfigError(
        f"model {model.name} does not score a history as a sequence encoder's last state · an item table "
        "(sasrec, gru4rec, bert4rec and lmrec do), so it has nothing to export to ONNX; serve it with the torch "
        "backend (lmrec serve RUN)."
    )


def export_onnx(
    run: str | Path,
    out: str | Path | None = None,
    int8: bool = False,
    overwrite: bool = False,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Export a run's encoder and item table for ONNX Runtime into `out` (default RUN/export); the manifest.

    Nothing is written unless ONNX Runtime's scores of the exported float encoder match torch's on the
    dataset's histories (within `CHECK_TOLERANCE` of the largest score); `int8` then quantises the encoder.
    """
    needs = [name for name in ("onnxruntime", "onnx", "onnxscript") if not _installed(name)]
    if needs:
        raise ConfigError(f"exporting to ONNX needs {', '.join(needs)}: pip install 'lmrec[onnx]'.")
    recommender = Recommender.load(run, data=data)
    out = Path(out) if out is not None else recommender.run.path / EXPORT_DIR
    if (out / MANIFEST).exists() and not overwrite:
        raise RunError(f"{out} already holds an export; pass --overwrite to replace it.")
    model = copy.deepcopy(recommender.model).eval()
    module = query_module(model)
    if hasattr(model, "item_table"):  # a text model's table: computed once, a constant of the graph
        with torch.no_grad():
            table = model.item_table().detach()
        model.item_table = lambda: table
    with torch.no_grad():
        items = model.output_embeddings().detach().float().contiguous().numpy()
    seen = float(model.seen_weight.detach()) if hasattr(model, "seen_weight") else None
    started = time.perf_counter()
    graph, opset = _export_graph(module, model.max_len)
    histories = _check_histories(recommender)
    with torch.inference_mode():
        expected = model.score_all(histories, (histories > 0).sum(1))
    floating = OnnxModel(graph, items, model.name, model.max_len, seen)
    diff = _max_diff(floating.score_all(histories, None), expected)
    scale = max(1.0, float(expected[:, 1:].abs().max()))
    if not diff <= CHECK_TOLERANCE * scale:
        raise RunError(
            f"the ONNX export of {recommender.run.path} scores {len(histories)} histories of its dataset up to "
            f"{diff:.3g} away from torch (allowed {CHECK_TOLERANCE * scale:.3g}); it was not written. Serve the "
            "run with the torch backend, and report the model and this message."
        )
    check: dict[str, Any] = {"histories": len(histories), "max_abs_diff_vs_torch": diff}
    if int8:
        graph = _quantised(graph)
        quantised = OnnxModel(graph, items, model.name, model.max_len, seen)
        scores = quantised.score_all(histories, None)
        check["int8_max_abs_diff_vs_torch"] = _max_diff(scores, expected)
        check[f"int8_top{CHECK_TOP}_overlap"] = _overlap(scores, expected, CHECK_TOP)
    table = io.BytesIO()
    np.save(table, items, allow_pickle=False)
    files = {ENCODER: graph, ITEMS: table.getvalue()}
    info = recommender.run.info()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "run": str(recommender.run.path.resolve()),
        "run_model_sha256": sha256_file(recommender.run.model_file),
        "dataset": {
            "name": info.get("dataset_name"),
            "path": str(recommender.dataset.path),
            "fingerprint": recommender.dataset.fingerprint,
        },
        "n_items": int(items.shape[0] - 1),
        "dim": int(items.shape[1]),
        "max_len": int(model.max_len),
        "opset": opset,
        "precision": "int8" if int8 else "float32",
        "quantisation": (
            "onnxruntime dynamic quantisation (weights int8, activations quantised per call); items.npy float32"
            if int8
            else None
        ),
        "seen_weight": seen,
        "inputs": {"items": ["batch", int(model.max_len)]},
        "outputs": {"query": ["batch", int(items.shape[1])]},
        "scores": "query @ items.T, + seen_weight on the window's items, column 0 = -inf",
        "files": {name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
        "check": check,
        "lmrec_version": __version__,
        "torch_version": torch.__version__,
        "onnxruntime_version": _ort().__version__,
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-replaced export never reads as whole
    for name, content in files.items():
        atomic_write(out / name, lambda handle, content=content: handle.write(content))
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _export_graph(module: nn.Module, max_len: int) -> tuple[bytes, int]:
    """The ONNX graph (bytes) of `module` over `[batch, max_len]` item windows, and its opset."""
    from lmrec.text.onnx import _without_torchvision_notes

    example = torch.zeros(2, max_len, dtype=torch.long)
    example[0, -3:] = torch.tensor([1, 2, 1])
    example[1, :] = 1
    with warnings.catch_warnings(), _without_torchvision_notes():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module.eval(),
                (example,),
                input_names=["items"],
                output_names=["query"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                dynamo=True,
                optimize=True,  # folds the weights' transposes, so that int8 quantisation finds every MatMul
                verbose=False,
            )
        except Exception as exc:
            raise ConfigError(f"cannot export the model to ONNX ({type(exc).__name__}: {exc}).") from exc
    proto = program.model_proto
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), OPSET)
    return proto.SerializeToString(), int(opset)


def _quantised(graph: bytes) -> bytes:
    """The graph with ONNX Runtime's dynamic int8 quantisation of its weights."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="lmrec-onnx-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(graph)
        root, note = logging.getLogger(), _PreprocessNote()
        root.addFilter(note)  # the quantiser advises shape pre-processing on the root logger; it changes nothing here
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(note)
        return target.read_bytes()


class _PreprocessNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


def _check_histories(recommender: Recommender) -> Tensor:
    """Right-aligned windows `[N, max_len]` of up to `CHECK_USERS` users spread over the dataset, and one of a
    single item (the shortest history served)."""
    dataset, width = recommender.dataset, recommender.model.max_len
    users = np.unique(np.linspace(0, dataset.n_users - 1, min(CHECK_USERS, dataset.n_users)).astype(np.int64))
    rows = [dataset.sequence(int(user))[-width:] for user in users]
    rows = [row for row in rows if len(row)] + [np.array([1])]
    windows = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        windows[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
    return windows


def _max_diff(scores: Tensor, expected: Tensor) -> float:
    return float((scores[:, 1:] - expected[:, 1:]).abs().max())


def _overlap(scores: Tensor, expected: Tensor, k: int) -> float:
    """Mean share of the rows' top-k items that both score tensors rank in their top k."""
    ours, theirs = scores.topk(k, dim=1).indices.tolist(), expected.topk(k, dim=1).indices.tolist()
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs, strict=True)]))


# -- loading and scoring --------------------------------------------------------------------------------------


class OnnxModel:
    """What the serving Engine uses of a next-item model, computed by an ONNX Runtime session.

    `hidden(inputs)` returns only the last position (`[B, 1, d]`), the one the Engine reads. Read-only: copies
    are the object itself.
    """

    backend = "onnx"
    uses_item_text = False  # new items cannot be added to an exported table
    explain_method = "none"
    scores_by_table = True  # the export is the encoder and the table

    def __init__(
        self,
        encoder: bytes,
        items: np.ndarray,
        name: str,
        max_len: int,
        seen_weight: float | None = None,
        threads: int | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.max_len = int(max_len)
        self.manifest = manifest or {}
        self.session = _session(encoder, threads)
        self.table = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
        self.n_items = self.table.shape[0] - 1
        if seen_weight is not None:
            self.seen_weight = torch.tensor(seen_weight, dtype=torch.float32)

    @classmethod
    def load(cls, folder: str | Path, run: RunDir, fingerprint: str, threads: int | None = None) -> OnnxModel:
        """An export checked file by file against its manifest's SHA-256, and against the served run's model
        file and dataset preparation; every mismatch is one sentence saying what to do."""
        folder = Path(folder)
        again = f"export the run again: lmrec export {run.path} --format onnx --out {folder} --overwrite"
        if not (folder / MANIFEST).is_file():
            raise RunError(f"{folder} holds no ONNX export ({MANIFEST} is missing); {again}.")
        manifest = read_json_object(folder / MANIFEST, RunError, again, "the export manifest")
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise RunError(f"{folder / MANIFEST} is not an lmrec ONNX export of format {FORMAT_VERSION}; {again}.")
        if manifest.get("dataset", {}).get("fingerprint") != fingerprint:
            raise RunError(
                f"the export {folder} was made on another dataset preparation (data "
                f"{str(manifest.get('dataset', {}).get('fingerprint'))[:12]}) than the served run {run.path} (data "
                f"{fingerprint[:12]}); {again}."
            )
        if manifest.get("run_model_sha256") != sha256_file(run.model_file):
            raise RunError(
                f"the export {folder} was made from another model than {run.model_file} (the run was trained "
                f"again, or the export belongs to another run); {again}."
            )
        hashes = manifest.get("files") or {}
        contents = {}
        for name in (ENCODER, ITEMS):
            path = folder / name
            if not path.is_file() or name not in hashes:
                raise RunError(f"the export {folder} lacks {name}; {again}.")
            content = path.read_bytes()
            found = hashlib.sha256(content).hexdigest()
            if found != hashes[name]:
                raise RunError(
                    f"{path} does not match the SHA-256 its manifest records ({str(hashes[name])[:12]}…, found "
                    f"{found[:12]}…): the file was changed or damaged; {again}."
                )
            contents[name] = content
        try:
            items = np.load(io.BytesIO(contents[ITEMS]), allow_pickle=False)
        except ValueError as exc:
            raise RunError(f"{folder / ITEMS} is not a plain array ({exc}); {again}.") from None
        if items.dtype != np.float32 or items.ndim != 2 or items.shape[0] - 1 != manifest.get("n_items"):
            raise RunError(f"{folder / ITEMS} is not the float32 item table the manifest describes; {again}.")
        try:
            model = cls(
                contents[ENCODER], items, str(manifest["model"]), int(manifest["max_len"]),
                manifest.get("seen_weight"), threads, manifest,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{folder / MANIFEST} is incomplete ({exc}); {again}.") from None
        return model

    def __deepcopy__(self, memo: dict) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self

    def _windows(self, inputs: Tensor) -> np.ndarray:
        """Right-aligned `[B, max_len]` int64 windows of right-aligned inputs of any width."""
        inputs = inputs[:, -self.max_len :]
        windows = np.zeros((inputs.shape[0], self.max_len), dtype=np.int64)
        windows[:, self.max_len - inputs.shape[1] :] = inputs.numpy()
        return windows

    def query(self, inputs: Tensor) -> Tensor:
        """The vectors `[B, d]` that the item table scores, after right-aligned inputs `[B, T]`."""
        return torch.from_numpy(self.session.run(None, {"items": self._windows(inputs)})[0])

    def hidden(self, inputs: Tensor) -> Tensor:
        """The last position's state `[B, 1, d]` (the only one exported)."""
        return self.query(inputs)[:, None]

    def output_embeddings(self) -> Tensor:
        """The item table `[n_items + 1, d]`."""
        return self.table

    def score_all(self, history: Tensor, lengths: Tensor | None) -> Tensor:
        """Scores of every item for the next step `[B, n_items + 1]`, column 0 = -inf, as the model's own."""
        window = history[:, -self.max_len :]
        scores = self.query(window) @ self.table.T
        if hasattr(self, "seen_weight"):
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, window, True)
            scores = scores + self.seen_weight * seen
        scores[:, 0] = NEG_INF
        return scores

    def score(self, history: Tensor, lengths: Tensor | None, candidates: Tensor) -> Tensor:
        """Scores `[B, C]` of the given candidate item ids `[B, C]`."""
        return self.score_all(history, lengths).gather(1, candidates)

    def explain(self, history: Tensor, lengths: Tensor, items: Tensor) -> Tensor:
        raise BackendUnsupported(
            "explanations need the torch model: occlusion is not run through the ONNX export; ask without "
            "explain=true, or serve with the torch backend."
        )


def with_backend(recommender: Recommender, backend: str, export: str | Path | None = None) -> Recommender:
    """The recommender as served by `backend`: itself for torch; for onnx, its model replaced by the export in
    `export` (default RUN/export), checked against the run and its dataset."""
    if backend == "torch":
        return recommender
    if backend != "onnx":
        raise ConfigError(f"unknown serving backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if not _installed("onnxruntime"):
        raise ConfigError("the onnx backend needs onnxruntime: pip install 'lmrec[onnx]'.")
    folder = Path(export) if export is not None else recommender.run.path / EXPORT_DIR
    model = OnnxModel.load(folder, recommender.run, recommender.dataset.fingerprint)
    log.info("scoring with the %s ONNX export in %s", model.manifest.get("precision"), folder)
    return Recommender(recommender.run, recommender.dataset, model, recommender.config)  # type: ignore[arg-type]


def _session(encoder: bytes, threads: int | None):
    """An ONNX Runtime CPU session on the graph's bytes, with `threads` (default torch's count) and no spinning."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared CPUs: wait, do not spin
    try:
        return ort.InferenceSession(encoder, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RunError(f"ONNX Runtime cannot load the encoder ({type(exc).__name__}: {exc}).") from None


def _ort():
    import onnxruntime

    return onnxruntime


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
