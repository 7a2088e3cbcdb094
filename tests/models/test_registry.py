"""Every registry entry builds with the published shape; tiny ones train on CPU; big ones stay on meta."""

import argparse

import pytest
import torch

from radio.models.commands import add_commands
from radio.models.cradio import RadioViT
from radio.models.registry import UnknownModelError, create_model, get_model_info, list_models
from radio.models.teacher import teacher_features

REQUIRED = [
    "c_radio_v3_vit_base_patch16_reg4_dinov2",
    "c_radio_v3_vit_large_patch16_reg4_dinov2",
    "c_radio_v3_vit_huge_patch16_reg4_dinov2",
    "c_radio_v2_vit_base_patch16",
    "c_radio_v2_vit_large_patch16",
    "c_radio_v2_vit_huge_patch16",
    "vit_h_14_siglip_clipa_224",
    "vit_l_14_siglip_clipa_224",
    "vit_l_14_siglip_clipa_336",
    "dinov2_vit_large_patch14_reg4",
    "dinov2_vit_giant_patch14_reg4",
    "siglip_so400m_patch14_384",
    "siglip2_so400m_patch16_512",
    "siglip2_giantopt_patch16_384",
    "clip_vit_large_patch14_336",
    "dfn_clip_vit_huge_patch14_378",
    "c_radio_tiny_patch16",
    "demo_vit_tiny_patch16",
    "demo_vit_tiny_patch14",
]

# Widths, depths, heads, patch, prefix tokens and summary sizes of the released models (checkpoints.md).
PUBLISHED = {
    "c_radio_v3_vit_base_patch16_reg4_dinov2": (768, 12, 12, 16, 8, 3 * 768),
    "c_radio_v3_vit_large_patch16_reg4_dinov2": (1024, 24, 16, 16, 8, 3 * 1024),
    "c_radio_v3_vit_huge_patch16_reg4_dinov2": (1280, 32, 16, 16, 8, 3 * 1280),
    "dinov2_vit_large_patch14_reg4": (1024, 24, 16, 14, 5, 1024),
    "dinov2_vit_giant_patch14_reg4": (1536, 40, 24, 14, 5, 1536),
    "dinov3_vit_large_patch16": (1024, 24, 16, 16, 5, 1024),
    "siglip_so400m_patch14_384": (1152, 27, 16, 14, 0, 1152),
    "siglip2_giantopt_patch16_384": (1536, 40, 16, 16, 0, 1536),
    "clip_vit_large_patch14_336": (1024, 24, 16, 14, 1, 768),
    "dfn_clip_vit_huge_patch14_378": (1280, 32, 16, 14, 1, 1024),
    "vit_h_14_siglip_clipa_224": (1280, 32, 16, 14, 1, 1024),
    "vit_l_14_siglip_clipa_224": (1024, 24, 16, 14, 1, 768),
}

TINY = [n for n in list_models() if get_model_info(n).depth <= 4]
BIG = [n for n in list_models() if n not in TINY]


def test_required_entries_are_registered():
    assert set(REQUIRED) <= set(list_models())
    assert len(BIG) >= 30 and len(TINY) >= 8


@pytest.mark.parametrize("name", list_models())
def test_info_matches_the_built_model(name):
    """Built on the meta device (no memory); a meta forward checks the output shapes too."""
    info = get_model_info(name)
    side = info.img_size // info.patch_size * info.patch_size  # SigLIP-384/14 runs at 378
    with torch.device("meta"):
        model = create_model(name)
        x = torch.empty(1, 3, side, side + info.patch_size)
        summary, spatial, _ = teacher_features(model, x, info.patch_size, project=info.summary_proj)
    blocks = model.blocks
    assert (model.embed_dim, len(blocks), blocks[0].attn.num_heads) == (info.embed_dim, info.depth, info.num_heads)
    assert model.num_prefix_tokens == info.num_prefix_tokens
    h, w = side // info.patch_size, side // info.patch_size + 1
    assert tuple(spatial.shape) == (1, info.embed_dim, h, w)
    assert tuple(summary.shape) == (1, info.summary_dim)
    assert isinstance(model, RadioViT) == info.is_student
    if name in PUBLISHED:
        shape = (info.embed_dim, info.depth, info.num_heads, info.patch_size, info.num_prefix_tokens, info.summary_dim)
        assert shape == PUBLISHED[name]


def test_nv_clip_tower_matches_its_description():
    """open_clip ViT-H-14 SigLIP-CLIPA: avg pool over patch tokens, LayerNorm after pooling, no ln_pre,
    MLP 5120, GELU, eps 1e-5, projection 1280 -> 1024."""
    with torch.device("meta"):
        m = create_model("vit_h_14_siglip_clipa_224")
    assert m.global_pool == "avg"
    assert isinstance(m.norm, torch.nn.Identity) and isinstance(m.norm_pre, torch.nn.Identity)
    assert m.fc_norm.eps == 1e-5 and m.blocks[0].mlp.fc1.out_features == 5120
    assert isinstance(m.blocks[0].mlp.act, torch.nn.GELU) and tuple(m.head.weight.shape) == (1024, 1280)
    assert m.pos_embed.shape[1] == 257


@pytest.mark.parametrize("name", TINY)
def test_tiny_entries_forward_backward(name):
    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(2, 3, info.img_size, info.img_size)
    if info.is_student:
        out = model(x)
        loss = out.cls_tokens.square().mean() + out.spatial.square().mean()
    else:
        summary, spatial, _ = teacher_features(model, x, info.patch_size, project=info.summary_proj)
        loss = summary.square().mean() + spatial.square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_any_timm_model_through_prefix():
    info = get_model_info("timm/vit_small_patch16_224")
    assert (info.embed_dim, info.depth, info.patch_size, info.num_prefix_tokens) == (384, 12, 16, 1)
    with torch.device("meta"):
        model = create_model("timm/vit_small_patch16_224", img_size=64)
    assert model.patch_embed.grid_size == (4, 4)
    conv = get_model_info("timm/resnet18")
    assert (conv.embed_dim, conv.patch_size, conv.num_prefix_tokens) == (512, 32, 0)
    with pytest.raises(UnknownModelError, match="unknown timm model"):
        get_model_info("timm/not_a_model")


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownModelError, match="c_radio_v3_vit_base_patch16_reg4_dinov2"):
        create_model("c_radio_v3_vit_base_patch16_reg4_dino")


def test_models_command_lists_entries(capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["models", "c_radio_v3*"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith("c_radio")]
    assert [r[0] for r in rows] == [
        "c_radio_v3_vit_base_patch16_reg4_dinov2",
        "c_radio_v3_vit_huge_patch16_reg4_dinov2",
        "c_radio_v3_vit_large_patch16_reg4_dinov2",
    ]
    assert rows[0][1:8] == ["cradio_b", "768", "12", "16", "512", "8", "2304"]  # teacher name, then shapes
    footer = lines[-1]  # the columns that are not self-explanatory are explained
    assert "prefix: CLS + register tokens" in footer and "summary: length of the summary vector (0: none" in footer
    args = parser.parse_args(["models", "nothing*"])
    assert args.func(args) == 1


def test_every_entry_says_which_public_checkpoints_it_is_for():
    from radio.models.public_checkpoints import public_checkpoints

    assert [name for name in list_models() if public_checkpoints(name) is None] == []
    assert "QuickGELU" in public_checkpoints("clip_vit_base_patch16_224")
    assert "GELU" in public_checkpoints("openclip_vit_base_patch16_224")
    assert "QuickGELU" not in public_checkpoints("openclip_vit_base_patch16_224")
