"""Item texts → vectors: pretrained encoders from local folders, an on-disk embedding cache, LoRA fine-tuning."""

from lmrec.text.cache import default_cache_dir, encode_cached
from lmrec.text.encoder import EncodeStats, TextEncoder, default_model_path
from lmrec.text.lora import TrainableTextEncoder, count_parameters, wrap_lora
from lmrec.text.onnx import OnnxTextEncoder, onnx_available

__all__ = [
    "EncodeStats",
    "OnnxTextEncoder",
    "TextEncoder",
    "TrainableTextEncoder",
    "count_parameters",
    "default_cache_dir",
    "default_model_path",
    "encode_cached",
    "onnx_available",
    "wrap_lora",
]
