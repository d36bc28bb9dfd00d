"""Item texts → vectors: pretrained encoders and decoder LLMs from local files, pooled; an on-disk embedding cache;
LoRA fine-tuning."""

from lmrec.text.cache import default_cache_dir, encode_cached
from lmrec.text.encoder import EncodeStats, TextEncoder
from lmrec.text.lora import TrainableTextEncoder, count_parameters, wrap_lora
from lmrec.text.onnx import OnnxTextEncoder, onnx_available
from lmrec.text.pooling import DEFAULT_PROMPT, POOLINGS
from lmrec.text.sources import BUNDLED, default_model_path, resolve_model_path

__all__ = [
    "BUNDLED",
    "DEFAULT_PROMPT",
    "POOLINGS",
    "EncodeStats",
    "OnnxTextEncoder",
    "TextEncoder",
    "TrainableTextEncoder",
    "count_parameters",
    "default_cache_dir",
    "default_model_path",
    "encode_cached",
    "onnx_available",
    "resolve_model_path",
    "wrap_lora",
]
