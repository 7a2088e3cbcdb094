"""Projection heads: the v2 MLP (C-RADIO's MLP2 names) and the attention head."""

import pytest
import torch
from public_layouts import _mlp2

from radio.models.heads import MLP2, build_head, mlp2_from_state_dict


def test_v2_structure_and_zero_final_bias():
    head = build_head("v2", 32, 48, 24, num_inner=2)
    keys = set(head.state_dict())
    assert {
        "pre_norm.0.weight",
        "fc1.weight",
        "blocks.1.0.weight",
        "blocks.1.2.weight",
        "final.0.weight",
        "final.2.weight",
        "final.2.bias",
    } <= keys
    assert len(head.blocks) == 2 and torch.count_nonzero(head.final[2].bias) == 0
    assert head(torch.randn(3, 7, 32)).shape == (3, 7, 24)
    assert head(torch.randn(3, 32)).shape == (3, 24)


def test_v2_computes_the_documented_function():
    head = build_head("v2", 8, 16, 4, num_inner=1)
    torch.nn.init.normal_(head.final[2].bias)
    x = torch.randn(5, 8)
    gelu = torch.nn.functional.gelu
    y = head.fc1(gelu(head.pre_norm[0](x)))
    y = y + head.blocks[0][2](gelu(head.blocks[0][0](y)))
    expected = head.final[2](gelu(head.final[0](y)))
    assert torch.allclose(head(x), expected, atol=1e-6)


def test_attn_head_mixes_tokens_then_projects():
    head = build_head("attn", 64, 32, 16, num_inner=1)
    assert len(head.blocks) == 2 and isinstance(head.mlp, MLP2)
    x = torch.randn(2, 6, 64)
    y = head(x)
    assert y.shape == (2, 6, 16) and head(torch.randn(2, 64)).shape == (2, 16)
    x2 = x.clone()
    x2[:, 0] += torch.randn(64)  # not a constant shift, which LayerNorm would remove
    assert not torch.allclose(head(x2)[:, 1:], y[:, 1:])  # attention: other tokens see the change
    y.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_unknown_version_names_the_valid_ones():
    with pytest.raises(ValueError, match="v2, attn"):
        build_head("v3", 8, 8, 8, 0)


def test_released_c_radio_adaptor_weights_load_into_mlp2():
    state = _mlp2("", 64, 32, 24, torch.zeros(1), seed=0)
    head = mlp2_from_state_dict(state)
    head.load_state_dict(state)  # strict: every name and shape matches
    shape = (head.fc1.in_features, head.fc1.out_features, len(head.blocks), head.final[2].out_features)
    assert shape == (64, 32, 1, 24)
