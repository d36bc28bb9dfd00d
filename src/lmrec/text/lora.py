"""Fine-tunable text encoders: LoRA adapters (peft) or full fine-tuning of a local Hugging Face encoder."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lmrec.errors import ConfigError
from lmrec.text.encoder import (
    DEFAULT_MAX_LENGTH,
    EncodeStats,
    check_max_length,
    check_texts,
    load_config,
    load_model,
    load_tokenizer,
    report_truncation,
    resolve_model_path,
    token_lengths,
)
from lmrec.text.pooling import mean_pool

Mode = Literal["frozen", "lora", "full"]
MODES = ("frozen", "lora", "full")

# Attention query/value projections by model type; BERT, RoBERTa, MiniLM and most others call them query/value.
# Decoder LLMs of the Llama family call them q_proj/v_proj; GPT-2 projects query, key and value in one c_attn.
LORA_TARGETS = {
    "distilbert": ("q_lin", "v_lin"),
    "mpnet": ("q", "v"),
    "deberta-v2": ("query_proj", "value_proj"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}
DEFAULT_LORA_TARGETS = ("query", "value")


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """The attention query and value projections of the model's family."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return LORA_TARGETS.get(model_type, DEFAULT_LORA_TARGETS)


def wrap_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: Sequence[str] | None = None,
) -> nn.Module:
    """Freeze `model` and add trainable LoRA adapters to `target_modules` (default: attention query/value).

    A target matches a module whose name is the target or ends with "." + target (peft's rule); a target
    matching nothing is an error rather than an adapter silently missing.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if r < 1 or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"LoRA needs r >= 1 and 0 <= dropout < 1 (got r={r}, dropout={dropout}).")
    targets = list(target_modules) if target_modules is not None else list(default_lora_targets(model))
    names = [name for name, _ in model.named_modules() if name]
    unmatched = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if unmatched or not targets:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(
            f"LoRA target modules {unmatched or targets} match no module of this model; "
            f"choose among its linear layers: {', '.join(linear)}."
        )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type=TaskType.FEATURE_EXTRACTION,
    )
    try:
        with peft_quietly():
            return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"cannot add LoRA adapters to {targets}: {exc}") from exc


@contextmanager
def peft_quietly() -> Iterator[None]:
    """Wrap a model with peft without transformers' FutureWarning about `is_gradient_checkpointing`.

    peft (0.21) reads that deprecated property of every model it wraps; the warning concerns peft's
    code, not the user's, so exactly that warning is filtered while wrapping.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


class TrainableTextEncoder(nn.Module):
    """Tokenized texts → L2-normalised mean-pooled embeddings, with gradient for fine-tuning.

    `mode`: "frozen" (no trainable weights; dropout stays off), "lora" (adapters only) or "full" (every weight).
    Starts in eval mode, like `from_pretrained`; call `.train()` before training.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        mode: Mode = "lora",
        max_length: int = DEFAULT_MAX_LENGTH,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.1,
        target_modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown text encoder mode {mode!r}; use one of {', '.join(MODES)}.")
        self.mode = mode
        path = resolve_model_path(model)
        self.config = load_config(path)
        self.tokenizer = load_tokenizer(path, self.config)
        self.max_length = check_max_length(max_length, self.tokenizer, self.config)
        self.last_stats: EncodeStats | None = None
        backbone = load_model(path)
        if mode == "lora":
            backbone = wrap_lora(backbone, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules)
        else:
            backbone.requires_grad_(mode == "full")
        self.backbone = backbone
        self.train(False)

    @property
    def dim(self) -> int:
        """Length of the output vectors."""
        return int(self.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated token tensors for `texts`; truncation is recorded in `last_stats` and logged."""
        check_texts(texts)
        self.last_stats = EncodeStats.of(token_lengths(self.tokenizer, texts), self.max_length)
        report_truncation(self.last_stats)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return dict(batch)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, dim] embeddings of a tokenized batch (as returned by `tokenize`)."""
        hidden = self.backbone(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])

    def train(self, mode: bool = True) -> TrainableTextEncoder:
        """Switch train/eval mode; a frozen backbone always stays in eval mode (no dropout noise)."""
        super().train(mode)
        if self.mode == "frozen":
            self.backbone.eval()
        return self
