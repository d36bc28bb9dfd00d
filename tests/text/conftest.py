"""Tiny decoder LLMs built here, real weights and tokenizers, no mocks: a Llama folder and a Llama GGUF file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

WORDS = ["a", "drill", "cordless", "battery", "glove", "nitrile", "safety", "glasses", "item", "means", "one", "word"]
SPECIALS = ["<unk>", "<s>", "</s>"]


def save_tiny_llama(folder: Path, pad: bool = True, causal_lm: bool = True) -> Path:
    """A 2-layer, 16-wide Llama and a one-token-per-word tokenizer (punctuation split off) saved as a folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerFast

    specials = SPECIALS + (["<pad>"] if pad else [])
    vocab = {token: i for i, token in enumerate([*specials, *WORDS, ":", '"'])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left",  # as many decoder tokenizers are saved; the encoder pads on the right all the same
        **({"pad_token": "<pad>"} if pad else {}),
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    (LlamaForCausalLM if causal_lm else LlamaModel)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def byte_level_alphabet() -> list[str]:
    """GPT-2's 256 byte-level symbols, in its order (every byte maps to one printable character)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def write_tiny_gguf(path: Path, hidden: int = 16, layers: int = 2, heads: int = 2, ff: int = 32) -> Path:
    """A float32 Llama GGUF file with a byte-level BPE vocabulary that knows one word ("drill"), as llama.cpp lays
    it out; about 40 KB."""
    import gguf

    tokens = ["<|endoftext|>", *byte_level_alphabet(), "dr", "dri", "dril", "drill"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))
    writer.add_token_merges(["d r", "dr i", "dri l", "dril l"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(0)
    kv = hidden // heads

    def weight(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    weight("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        weight(f"blk.{i}.attn_q.weight", hidden, hidden)
        weight(f"blk.{i}.attn_k.weight", kv, hidden)
        weight(f"blk.{i}.attn_v.weight", kv, hidden)
        weight(f"blk.{i}.attn_output.weight", hidden, hidden)
        weight(f"blk.{i}.ffn_gate.weight", ff, hidden)
        weight(f"blk.{i}.ffn_up.weight", ff, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def make_tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build tiny local Llama folders (`pad=False`: a tokenizer without a padding token)."""

    def make(pad: bool = True, causal_lm: bool = True) -> Path:
        return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), pad=pad, causal_lm=causal_lm)

    return make


@pytest.fixture(scope="session")
def tiny_llama(make_tiny_llama: Callable[..., Path]) -> Path:
    """A tiny Llama saved as a causal-LM checkpoint (LM head included, as real decoders are)."""
    return make_tiny_llama()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama GGUF file; skipped where the gguf package is not installed."""
    pytest.importorskip("gguf")
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf")
