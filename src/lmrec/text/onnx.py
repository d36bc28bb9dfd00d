"""Optional ONNX Runtime backend: the same vectors as `TextEncoder` (max abs diff ~2e-7), about 2x faster on CPU
for all-MiniLM-L6-v2 on short texts (docs/benchmarks.md; not on long ones, nor for SmolLM2-135M).

Needs `onnxruntime` and `onnxscript` (torch's exporter). The model, its pooling included, is exported once
per model and pooling (a few seconds) to `$LMREC_CACHE_DIR/onnx/` and reused from there.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmrec.atomic import atomic_write
from lmrec.errors import ConfigError
from lmrec.text.cache import cache_root
from lmrec.text.encoder import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH, TextEncoder
from lmrec.text.pooling import DEFAULT_POOLING, DEFAULT_PROMPT, pool

log = logging.getLogger(__name__)


def onnx_available() -> bool:
    """Whether ONNX Runtime and torch's ONNX exporter (onnxscript) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))


class PooledEncoder(nn.Module):
    """The model plus its pooling, taking the tokenizer's tensors positionally (the exported graph)."""

    def __init__(self, model: nn.Module, input_names: list[str], pooling: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.pooling = pooling

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.input_names, inputs, strict=True))
        return pool(self.model(**batch).last_hidden_state, batch["attention_mask"], self.pooling)


class OnnxTextEncoder(TextEncoder):
    """A `TextEncoder` that runs the model with ONNX Runtime; it shares the torch encoder's cache keys."""

    def __init__(
        self,
        model: str | Path | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        pooling: str = DEFAULT_POOLING,
        prompt: str = DEFAULT_PROMPT,
        onnx_dir: str | Path | None = None,
    ) -> None:
        if not onnx_available():
            raise ConfigError(
                "the ONNX text encoder needs onnxruntime and onnxscript: pip install onnxruntime onnxscript"
            )
        super().__init__(
            model, max_length=max_length, batch_size=batch_size, threads=threads, pooling=pooling, prompt=prompt
        )
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else cache_root() / "onnx"
        self._session = None

    @property
    def onnx_path(self) -> Path:
        """Where this model's exported graph lives (one per pooling of the token states: mean, or last token)."""
        read = "" if self.pooling == "mean" else "-last"
        return self.onnx_dir / f"{self.model_id[:32]}{read}.onnx"

    @property
    def session(self):
        """The ONNX Runtime session (exporting the model first if needed), using `threads` or torch's count."""
        if self._session is None:
            import onnxruntime

            if not self.onnx_path.is_file():
                self.export()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            try:
                self._session = onnxruntime.InferenceSession(
                    str(self.onnx_path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise ConfigError(
                    f"cannot load {self.onnx_path} ({exc}); delete it to export the model again."
                ) from exc
        return self._session

    def export(self) -> None:
        """Export model + pooling with dynamic batch and sequence axes, written atomically."""
        names = list(self.tokenizer.model_input_names)
        example = self.tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
        batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
        log.info("exporting %s to ONNX at %s (once per model)", self.path, self.onnx_path)
        with warnings.catch_warnings(), _without_torchvision_notes():
            warnings.simplefilter("ignore")
            try:
                program = torch.onnx.export(
                    PooledEncoder(self.model, names, self.pooling).eval(),
                    tuple(example[name] for name in names),
                    input_names=names,
                    output_names=["sentence_embedding"],
                    dynamic_shapes=(tuple({0: batch, 1: length} for _ in names),),  # one spec per *inputs tensor
                    dynamo=True,
                    optimize=False,
                    verbose=False,
                )
            except Exception as exc:
                raise ConfigError(
                    f"cannot export {self.path} to ONNX ({type(exc).__name__}); use TextEncoder."
                ) from exc
        graph = program.model_proto.SerializeToString()
        atomic_write(self.onnx_path, lambda handle: handle.write(graph))

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """One ONNX Runtime run over a batch of texts."""
        batch = self.tokenize(texts, tensors="np")
        feeds = {name: batch[name].astype(np.int64) for name in self.tokenizer.model_input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class _TorchvisionNote(logging.Filter):
    """Drops the exporter's "torchvision is not installed. Skipping torchvision::nms" lines: text encoders
    use no torchvision operator, so the note says nothing to an lmrec user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextmanager
def _without_torchvision_notes() -> Iterator[None]:
    """Silence only those notes, only while exporting."""
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    note = _TorchvisionNote()
    exporter_log.addFilter(note)
    try:
        yield
    finally:
        exporter_log.removeFilter(note)
