"""The cross-encoder on a tiny BERT built here: bias terms, fallback slots, pair truncation and learning."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel, BertTokenizer

from lmrec.models.cross_encoder import HISTORY_FEATURES, CrossEncoder, pair_token_lengths, tokenize_pairs
from lmrec.text.lora import wrap_lora

WORDS = ["toy", "story", "drama", "war", "comedy", "thriller", "rating", "1", "5", ";", "—"]


@pytest.fixture(scope="module")
def tiny(make_tiny_bert) -> tuple[BertModel, BertTokenizer]:
    """A 2-layer, 32-wide BERT and a WordPiece tokenizer with a few words."""
    folder = make_tiny_bert(WORDS)
    return BertModel.from_pretrained(folder), BertTokenizer.from_pretrained(folder)


def model_of(backbone: torch.nn.Module, n_users: int = 3, n_items: int = 4) -> CrossEncoder:
    return CrossEncoder(backbone, 32, n_users=n_users, n_items=n_items, dropout=0.0)


def test_untrained_head_predicts_the_bias_terms(tiny: tuple[BertModel, BertTokenizer]) -> None:
    backbone, tokenizer = tiny
    model = model_of(backbone).eval()
    model.user_known[:] = True
    model.item_known[1:] = True
    with torch.no_grad():
        model.user_bias.weight.copy_(torch.arange(4.0)[:, None])
        model.item_bias.weight.copy_(torch.arange(5.0)[:, None] / 10)
        model.feature_weights.copy_(torch.tensor([2.0, 1.0, -1.0]))
    tokens = tokenize_pairs(tokenizer, ["toy story", "drama"], ["war", "comedy"], 16)
    users, items = torch.tensor([0, 2]), torch.tensor([1, 4])
    features = torch.tensor([[0.5, 0.25, 0.5], [-0.5, 0.0, 1.0]])
    logits = model(tokens, users, items, features)
    assert torch.allclose(logits, torch.tensor([1.1 + 1.0 + 0.25 - 0.5, 3.4 - 1.0 - 1.0]))
    assert torch.equal(logits, model.bias_logit(users, items, features))


def test_past_rate_is_shrunk_towards_the_prior(tiny: tuple[BertModel, BertTokenizer]) -> None:
    model = model_of(tiny[0])
    model.rate_prior.fill_(0.5)
    rates = model.past_rate(torch.tensor([0.0, 10.0, 3.0]), torch.tensor([0.0, 10.0, 5.0]))
    assert torch.allclose(rates, torch.tensor([0.0, 15 / 15 - 0.5 - 2.5 / 15, (3 + 2.5) / 10 - 0.5]))


def test_unknown_users_and_items_use_the_fallback_slot(tiny: tuple[BertModel, BertTokenizer]) -> None:
    model = model_of(tiny[0])
    model.user_known[torch.tensor([0, 2])] = True
    model.item_known[torch.tensor([1, 2])] = True
    assert model.user_slots(torch.tensor([0, 1, 2, -1])).tolist() == [1, 0, 3, 0]
    assert model.item_slots(torch.tensor([1, 2, 3, 0])).tolist() == [1, 2, 0, 0]
    with torch.no_grad():
        model.user_bias.weight[1] = 2.0
    dropped = model.bias_logit(
        torch.tensor([0, 0]), torch.tensor([1, 1]), torch.zeros(2, len(HISTORY_FEATURES)), torch.tensor([False, True])
    )
    assert dropped.tolist() == [2.0, 0.0]


def test_pairs_are_cut_on_the_history_side(tiny: tuple[BertModel, BertTokenizer]) -> None:
    tokenizer = tiny[1]
    history = " ; ".join(["toy story — rating 5"] * 6)
    lengths = pair_token_lengths(tokenizer, [history, "drama"], ["comedy thriller", "war"])
    assert lengths.tolist() == [3 + 6 * 5 + 5 + 2, 5]
    tokens = tokenize_pairs(tokenizer, [history, "drama"], ["comedy thriller", "war"], max_length=12)
    ids = tokens["input_ids"][0].tolist()
    assert len(ids) == 12 and tokenizer.convert_ids_to_tokens(ids[-3:]) == ["comedy", "thriller", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(ids[1:3]) == ["toy", "story"]  # the most recent events are kept
    assert tokens["attention_mask"][1].sum() == 5


def toy_problem(tokenizer: BertTokenizer) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Users who rated comedies 5 like comedies; those who rated them 1 do not."""
    histories = ["comedy — rating 5 ; toy story — rating 5", "comedy — rating 1 ; war — rating 1"] * 4
    candidates = ["comedy", "comedy", "toy story", "toy story"] * 2
    labels = torch.tensor([1.0, 0.0] * 4)
    return tokenize_pairs(tokenizer, histories, candidates, 32), labels


def fit(model: CrossEncoder, tokens: dict[str, torch.Tensor], labels: torch.Tensor, steps: int) -> list[float]:
    """A few Adam steps of BCE on the toy problem; the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.01)
    users = items = torch.zeros(len(labels), dtype=torch.long)
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(tokens, users, items, torch.zeros(len(labels), len(HISTORY_FEATURES)))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_lora_cross_encoder_learns_a_separable_problem(tiny: tuple[BertModel, BertTokenizer]) -> None:
    torch.manual_seed(0)
    backbone = wrap_lora(BertModel(tiny[0].config), dropout=0.0)
    model = model_of(backbone)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(
        "lora_" in n or n.startswith(("head.", "global_bias", "feature_weights", "user_bias", "item_bias"))
        for n in trainable
    )
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = fit(model, *toy_problem(tiny[1]), steps=40)
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_full_fine_tuning_trains_every_weight(tiny: tuple[BertModel, BertTokenizer]) -> None:
    torch.manual_seed(0)
    model = model_of(BertModel(tiny[0].config))
    assert all(p.requires_grad for p in model.parameters())
    before = model.backbone.encoder.layer[0].attention.self.query.weight.detach().clone()
    losses = fit(model, *toy_problem(tiny[1]), steps=20)
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(before, model.backbone.encoder.layer[0].attention.self.query.weight)
