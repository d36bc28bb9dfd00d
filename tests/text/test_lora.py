"""LoRA and full fine-tuning on a tiny BERT built here: which weights train, and that training lowers a loss."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import (
    DistilBertConfig,
    DistilBertModel,
    LlamaConfig,
    LlamaModel,
    MPNetConfig,
    MPNetModel,
)

from lmrec.errors import ConfigError
from lmrec.text import TrainableTextEncoder, count_parameters, wrap_lora

WORDS = ["toy", "story", "drama", "war", "comedy", "list", "schindler", "animation", "children", "thriller"]
TEXTS = ["toy story animation children comedy", "schindler list drama war", "thriller war", "comedy"]


@pytest.fixture(scope="module")
def tiny(make_tiny_bert) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocabulary of a few words, saved as a model folder."""
    return make_tiny_bert(WORDS)


def train_steps(encoder: TrainableTextEncoder, steps: int) -> list[float]:
    """Pull each text's embedding towards a fixed random unit vector; return the loss of every step."""
    torch.manual_seed(0)
    targets = torch.nn.functional.normalize(torch.randn(len(TEXTS), encoder.dim), dim=-1)
    batch = encoder.tokenize(TEXTS)
    optimizer = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=0.01)
    encoder.train()
    losses = []
    for _ in range(steps):
        loss = (1 - (encoder(batch) * targets).sum(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_lora_trains_only_the_adapters(tiny: Path) -> None:
    encoder = TrainableTextEncoder(tiny, mode="lora", dropout=0.0)
    names = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert names and all("lora_" in name for name in names)
    assert any(".query." in name for name in names) and any(".value." in name for name in names)
    before = {name: p.detach().clone() for name, p in encoder.named_parameters() if not p.requires_grad}
    losses = train_steps(encoder, steps=30)
    assert losses[-1] < losses[0] - 0.05
    for name, p in encoder.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name
    trainable, total = count_parameters(encoder)
    assert 0 < trainable < total / 5


def test_full_mode_trains_every_weight(tiny: Path) -> None:
    encoder = TrainableTextEncoder(tiny, mode="full")
    trainable, total = count_parameters(encoder)
    assert trainable == total
    losses = train_steps(encoder, steps=10)
    assert losses[-1] < losses[0] - 0.05
    assert all(p.grad is not None for p in encoder.parameters())


def test_frozen_mode_has_nothing_to_train_and_no_dropout(tiny: Path) -> None:
    encoder = TrainableTextEncoder(tiny, mode="frozen").train()
    assert count_parameters(encoder)[0] == 0 and not encoder.backbone.training
    batch = encoder.tokenize(TEXTS)
    torch.testing.assert_close(encoder(batch), encoder(batch))


def test_embeddings_are_normalised_and_truncation_counted(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = TrainableTextEncoder(tiny, mode="frozen", max_length=4)
    with caplog.at_level(logging.WARNING, logger="lmrec.text.encoder"):
        batch = encoder.tokenize(TEXTS)
    assert batch["input_ids"].shape == (4, 4)
    assert encoder.last_stats is not None and encoder.last_stats.truncated == 2
    assert "2 of 4 texts were longer than 4 tokens" in caplog.text
    torch.testing.assert_close(encoder(batch).norm(dim=-1), torch.ones(4))


def test_a_target_that_matches_nothing_is_an_error(tiny: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['valu'\] match no module.*query"):
        TrainableTextEncoder(tiny, mode="lora", target_modules=["query", "valu"])


def test_unknown_mode(tiny: Path) -> None:
    with pytest.raises(ConfigError, match="unknown text encoder mode 'partial'"):
        TrainableTextEncoder(tiny, mode="partial")  # type: ignore[arg-type]


def test_default_targets_of_other_model_families() -> None:
    mpnet = MPNetModel(MPNetConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    distilbert = DistilBertModel(DistilBertConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    llama = LlamaModel(
        LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    for model, targets in [(mpnet, {"q", "v"}), (distilbert, {"q_lin", "v_lin"}), (llama, {"q_proj", "v_proj"})]:
        wrapped = wrap_lora(model)
        adapted = {
            name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in wrapped.named_parameters() if "lora_A" in name
        }
        assert adapted == targets


def test_wrapping_with_peft_warns_nothing(tiny: Path, recwarn: pytest.WarningsRecorder) -> None:
    TrainableTextEncoder(tiny, mode="lora")
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]
