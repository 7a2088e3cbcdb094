"""Projection heads: the v2 MLP (C-RADIO's MLP2 names) and the attention head."""

import pytest
import torch
from public_layouts import _mlp2

from radio.models.heads import MLP2, HeadSpec, fold_affine_into_head, mlp2_from_state_dict


def test_v2_structure_and_zero_final_bias():
    head = HeadSpec("v2", 32, 24, hidden=48, num_inner=2).build()
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
    head = HeadSpec("v2", 8, 4, hidden=16, num_inner=1).build()
    torch.nn.init.normal_(head.final[2].bias)
    x = torch.randn(5, 8)
    gelu = torch.nn.functional.gelu
    y = head.fc1(gelu(head.pre_norm[0](x)))
    y = y + head.blocks[0][2](gelu(head.blocks[0][0](y)))
    expected = head.final[2](gelu(head.final[0](y)))
    assert torch.allclose(head(x), expected, atol=1e-6)


def test_attn_head_mixes_tokens_then_projects():
    head = HeadSpec("attn", 64, 16, hidden=32, num_inner=1).build()
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
    with pytest.raises(ValueError, match="linear, v2, attn"):
        HeadSpec("v3", 8, 8, 8, 0).build()


def test_released_c_radio_adaptor_weights_load_into_mlp2():
    state = _mlp2("", 64, 32, 24, torch.zeros(1), seed=0)
    head = mlp2_from_state_dict(state)
    head.load_state_dict(state)  # strict: every name and shape matches
    shape = (head.fc1.in_features, head.fc1.out_features, len(head.blocks), head.final[2].out_features)
    assert shape == (64, 32, 1, 24)


@pytest.mark.parametrize(
    "spec", [HeadSpec("linear", 8, 6), HeadSpec("v2", 8, 6, 16, 1), HeadSpec("attn", 64, 6, 16, 0)]
)
def test_each_head_keeps_its_spec_and_names_its_output_layer(spec):
    head = spec.build()
    assert HeadSpec.from_dict(spec.as_dict()) == head.spec == spec
    # output_weight_key finds the output layer in a state dict: the same tensor as output_linear's weight.
    assert head.state_dict()[spec.output_weight_key].data_ptr() == head.output_linear.weight.data_ptr()
    torch.nn.init.normal_(head.output_linear.bias)
    rebuilt = HeadSpec.from_dict(spec.as_dict()).build()
    rebuilt.load_state_dict(head.state_dict())  # strict: same structure
    x = torch.randn(2, 3, spec.in_dim)
    assert torch.equal(rebuilt(x), head(x))


@pytest.mark.parametrize(
    "spec", [HeadSpec("linear", 8, 6), HeadSpec("v2", 8, 6, 16, 1), HeadSpec("attn", 64, 6, 16, 0)]
)
def test_folding_an_affine_map_into_a_head_applies_it_after_the_head(spec):
    head = spec.build()
    torch.nn.init.normal_(head.output_linear.bias)
    g = torch.Generator().manual_seed(0)
    a, shift = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(4, spec.in_dim)
    before = head(x)
    folded = fold_affine_into_head(head, a, shift)
    expected = before.double() @ a.T + shift
    assert torch.allclose(folded(x).double(), expected, atol=1e-4)
    assert torch.equal(head(x), before)  # the original is untouched
    with pytest.raises(ValueError, match="6 outputs"):
        fold_affine_into_head(head, torch.eye(5), torch.zeros(5))
