"""The shared Transformer block: causal vs bidirectional masks, padding, attention weights, checkpoint keys."""

import pytest
import torch

from lmrec.models.transformer import TransformerBlock, attention_mask

HIDDEN, HEADS, T = 8, 2, 5


def block(norm_first: bool) -> TransformerBlock:
    return TransformerBlock(HIDDEN, HEADS, dropout=0.1, ffn_mult=2, norm_first=norm_first).eval()


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_mask_hides_later_inputs_and_bidirectional_sees_them(norm_first: bool) -> None:
    layer = block(norm_first)
    ids = torch.arange(1, T + 1)[None]
    x = torch.randn(1, T, HIDDEN)
    changed = x.clone()
    changed[:, 3:] = torch.randn(1, T - 3, HIDDEN)
    for need_weights in (False, True):
        causal = attention_mask(ids, causal=True)
        before, after = layer(x, causal, need_weights)[0], layer(changed, causal, need_weights)[0]
        assert torch.allclose(before[:, :3], after[:, :3], atol=1e-6, rtol=0)
        both = attention_mask(ids, causal=False)
        before, after = layer(x, both, need_weights)[0], layer(changed, both, need_weights)[0]
        assert (before[:, :3] - after[:, :3]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
def test_padding_keys_get_no_weight_and_rows_sum_to_one(causal: bool) -> None:
    ids = torch.tensor([[0, 0, 3, 4, 5], [0, 1, 2, 3, 4]])
    _, weights = block(norm_first=causal)(torch.randn(2, T, HIDDEN), attention_mask(ids, causal), need_weights=True)
    assert weights is not None and weights.shape == (2, HEADS, T, T)
    assert torch.allclose(weights.sum(-1), torch.ones(2, HEADS, T))
    padding_key = (ids == 0)[:, None, None, :] & ~torch.eye(T, dtype=torch.bool)  # a query may see itself
    assert torch.equal(weights.masked_select(padding_key), torch.zeros(int(padding_key.expand_as(weights).sum())))
    if causal:
        assert torch.equal(weights.triu(1), torch.zeros_like(weights))
        assert torch.equal(weights[0, :, 0, 0], torch.ones(HEADS))  # left padding sees nothing but itself


@pytest.mark.parametrize("norm_first", [True, False])
def test_keeping_the_weights_computes_the_same_outputs(norm_first: bool) -> None:
    layer = block(norm_first)
    x, allowed = torch.randn(3, T, HIDDEN), attention_mask(torch.tensor([[0, 1, 2, 3, 4]] * 3), causal=norm_first)
    fast, none = layer(x, allowed)
    explicit, weights = layer(x, allowed, need_weights=True)
    assert none is None and weights is not None
    assert torch.allclose(fast, explicit, atol=1e-6)


def test_state_dict_keys_follow_the_order_each_norm_acts_in() -> None:
    # Saved SASRec/lmrec and BERT4Rec checkpoints (weights and optimizer states) rely on these names and orders.
    pre = [k.rsplit(".", 1)[0] for k in block(norm_first=True).state_dict()][::2]
    post = [k.rsplit(".", 1)[0] for k in block(norm_first=False).state_dict()][::2]
    assert pre == ["ln1", "attn.qkv", "attn.out", "ln2", "ffn.0", "ffn.2"]
    assert post == ["attn.qkv", "attn.out", "ln1", "ffn.0", "ffn.2", "ln2"]


def test_heads_must_divide_hidden() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerBlock(10, 3, dropout=0.0, ffn_mult=2, norm_first=True)
