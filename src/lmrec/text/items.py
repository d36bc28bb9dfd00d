"""Item text for language-model encoders: the rendered texts of a dataset, with a counted fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.text.cache import encode_cached
from lmrec.text.encoder import DEFAULT_MAX_LENGTH, TextEncoder, cut_summary, load_config, model_kind
from lmrec.text.onnx import OnnxTextEncoder, onnx_available
from lmrec.text.pooling import DEFAULT_POOLING, DEFAULT_PROMPT
from lmrec.text.sources import is_gguf, resolve_model_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemTexts:
    """Texts indexed by item id (index 0 is padding) and how many items had none."""

    texts: list[str]
    missing: int


def item_texts(texts: list[str | None], ids: list[str]) -> ItemTexts:
    """Fill empty item texts with "item <original id>" so every item can be encoded; count them.

    The fallback carries no meaning, so such items rely on their ID embedding where the model has one.
    """
    filled, missing = [""], 0
    for text, item_id in zip(texts[1:], ids[1:], strict=True):
        if text and text.strip():
            filled.append(text)
        else:
            filled.append(f"item {item_id}")
            missing += 1
    if missing:
        log.warning(
            "%d of %d items have no text; they are encoded as 'item <id>', which carries no meaning "
            "(a model with ID embeddings can still learn them from their events)",
            missing,
            len(filled) - 1,
        )
    return ItemTexts(filled, missing)


def onnx_pays(model: str | Path | None) -> bool:
    """Whether to encode with ONNX Runtime: when it is installed and the model is a bidirectional encoder folder.

    On this kind of CPU it encodes all-MiniLM-L6-v2 about 2x faster than torch on short texts at equal output
    (not on 64-token product texts), and SmolLM2-135M 12% slower (docs/benchmarks.md), so decoder LLMs and
    GGUF files run on torch.
    """
    if not onnx_available():
        return False
    path = resolve_model_path(model)
    return not is_gguf(path) and model_kind(load_config(path), path) == "encoder"


def encoder_options(params: Any) -> dict[str, Any]:
    """The `encode_items` settings held by a model config (`encoder`, `text_max_length`, `text_pooling`,
    `text_prompt`), with the defaults for those it lacks, so every caller encodes a model's items alike."""
    return {
        "model": getattr(params, "encoder", None),
        "max_length": getattr(params, "text_max_length", DEFAULT_MAX_LENGTH),
        "pooling": getattr(params, "text_pooling", DEFAULT_POOLING),
        "prompt": getattr(params, "text_prompt", DEFAULT_PROMPT),
    }


def encode_items(
    texts: list[str | None],
    ids: list[str],
    model: str | Path | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    cache_dir: Path | None = None,
    progress: bool = False,
    pooling: str = DEFAULT_POOLING,
    prompt: str = DEFAULT_PROMPT,
) -> tuple[torch.Tensor, dict]:
    """Embeddings `[n_items + 1, dim]` of a catalogue (row 0 zero) and a summary for the run record."""
    items = item_texts(texts, ids)
    backend = OnnxTextEncoder if onnx_pays(model) else TextEncoder
    encoder = backend(model, max_length=max_length, pooling=pooling, prompt=prompt)
    vectors = encode_cached(encoder, items.texts[1:], cache_dir=cache_dir, progress=progress)
    table = np.zeros((len(items.texts), encoder.dim), dtype=np.float32)
    table[1:] = vectors
    stats = encoder.last_stats
    summary = {
        "encoder": str(encoder.path),
        "backend": "onnxruntime" if isinstance(encoder, OnnxTextEncoder) else "torch",
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "max_length": encoder.max_length,
        "pooling": encoder.pooling,
        **({"prompt": encoder.prompt} if encoder.pooling == "prompt" else {}),
        "missing_text": items.missing,
        "truncated": stats.truncated if stats else 0,
        **({"tokens_cut": cut_summary(stats.cut)} if stats and stats.cut else {}),
    }
    return torch.from_numpy(table), summary
