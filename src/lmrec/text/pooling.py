"""Pooling token states into one L2-normalised vector per text: masked mean, last real token, or a prompt.

A bidirectional encoder is read by its mean (sentence-transformers' pooling). A decoder LLM sees each token
only through the ones before it, so its last real token has read the whole text; `prompt` wraps the text in
a sentence that asks for a summary first, so that this last token has to condense it (PromptEOL, Jiang et
al. 2023, "Scaling Sentence Embeddings with Large Language Models").
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from lmrec.errors import ConfigError

Pooling = Literal["mean", "last", "prompt"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
DEFAULT_POOLING: Pooling = "mean"
DEFAULT_PROMPT = 'This product: "{text}" means in one word: "'
PLACEHOLDER = "{text}"


def check_pooling(pooling: str) -> str:
    """`pooling`, refused unless it is one of `POOLINGS`."""
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown text pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
    return pooling


def split_prompt(prompt: str) -> tuple[str, str]:
    """The text before and after the prompt's single `{text}` placeholder."""
    if prompt.count(PLACEHOLDER) != 1:
        raise ConfigError(f"the text prompt must hold {PLACEHOLDER} exactly once, where the item text goes: {prompt!r}")
    before, after = prompt.split(PLACEHOLDER)
    return before, after


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the token states where `mask` is 1 (sentence-transformers' pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last position where `mask` is 1, whichever side the padding is on."""
    width = mask.shape[1]
    return (width - 1 - mask.flip(dims=[1]).to(torch.int64).argmax(dim=1)).to(torch.int64)


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised state of each text's last real token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return torch.nn.functional.normalize(hidden[rows, last_positions(mask)], p=2, dim=-1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`[B, T, H]` token states → `[B, H]` unit vectors by `pooling` (a prompted text is read at its end)."""
    return mean_pool(hidden, mask) if pooling == "mean" else last_token_pool(hidden, mask)
