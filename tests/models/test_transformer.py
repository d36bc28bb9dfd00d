"""The shared Transformer block: causal vs bidirectional masks, padding, the attention on projected inputs,
checkpoint keys."""

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
    causal = attention_mask(ids, causal=True)
    before, after = layer(x, causal), layer(changed, causal)
    assert torch.allclose(before[:, :3], after[:, :3], atol=1e-6, rtol=0)
    both = attention_mask(ids, causal=False)
    before, after = layer(x, both), layer(changed, both)
    assert (before[:, :3] - after[:, :3]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
def test_padding_inputs_reach_no_real_position(causal: bool) -> None:
    ids = torch.tensor([[0, 0, 3, 4, 5], [0, 1, 2, 3, 4]])
    layer, allowed = block(norm_first=causal), attention_mask(ids, causal)
    x = torch.randn(2, T, HIDDEN)
    changed = torch.where((ids == 0)[..., None], torch.randn(2, T, HIDDEN), x)
    real = (ids > 0)[..., None]
    assert torch.allclose(layer(x, allowed) * real, layer(changed, allowed) * real, atol=1e-6, rtol=0)
    if causal:  # left padding sees nothing but itself
        alone = layer(x[:1, :1], attention_mask(ids[:1, :1], causal))
        assert torch.allclose(layer(x, allowed)[:1, :1], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_the_attention_on_projected_inputs_is_softmax_attention(norm_first: bool) -> None:
    attn = block(norm_first).attn
    x, allowed = torch.randn(3, T, HIDDEN), attention_mask(torch.tensor([[0, 1, 2, 3, 4]] * 3), causal=norm_first)
    q, k, v = attn.qkv(x).view(3, T, 3, HEADS, HIDDEN // HEADS).permute(2, 0, 3, 1, 4)
    weights = ((q @ k.transpose(-2, -1)) / (HIDDEN // HEADS) ** 0.5).masked_fill(~allowed, float("-inf")).softmax(-1)
    explicit = (weights @ v).transpose(1, 2).reshape(3, T, HIDDEN)
    assert torch.allclose(attn.attend(attn.qkv(x), allowed), explicit, atol=1e-6)
    assert torch.allclose(attn(x, allowed), attn.out(explicit), atol=1e-6)


def test_state_dict_keys_follow_the_order_each_norm_acts_in() -> None:
    # Saved SASRec/lmrec and BERT4Rec checkpoints (weights and optimizer states) rely on these names and orders.
    pre = [k.rsplit(".", 1)[0] for k in block(norm_first=True).state_dict()][::2]
    post = [k.rsplit(".", 1)[0] for k in block(norm_first=False).state_dict()][::2]
    assert pre == ["ln1", "attn.qkv", "attn.out", "ln2", "ffn.0", "ffn.2"]
    assert post == ["attn.qkv", "attn.out", "ln1", "ffn.0", "ffn.2", "ln2"]


def test_heads_must_divide_hidden() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerBlock(10, 3, dropout=0.0, ffn_mult=2, norm_first=True)
