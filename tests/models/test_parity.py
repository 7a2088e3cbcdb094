"""Teachers compute what the original implementation computes: the library's own model with random weights,
saved in its native format, loaded through ``pretrained_teacher_model_path``, the same normalised input,
fp32 — at the native size and at two others (one non-square)."""

import pytest
import torch
from safetensors.torch import save_file

from radio.models.teacher import FrozenTeacher

transformers = pytest.importorskip("transformers")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def hf_save(model, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return str(path)


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("size", [(56, 56), (112, 112), (84, 126)])
def test_dinov2_matches_transformers_at_every_size(tmp_path, registers, size):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=192)
    kwargs.update(patch_size=14, image_size=56, layerscale_value=1e-5, layer_norm_eps=1e-6)
    if registers:
        theirs = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kwargs))
        name = "tiny_dinov2_vit_patch14_reg4"
    else:
        theirs = transformers.Dinov2Model(transformers.Dinov2Config(**kwargs))
        name = "tiny_dinov2_vit_patch14"
    with torch.no_grad():  # a grid that is not smooth, so any resampling difference shows
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    theirs.eval()
    path = hf_save(theirs, tmp_path / "hf.safetensors")
    ours = FrozenTeacher(name, path, input_size=56, dtype=torch.float32)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = theirs(pixel_values=x).last_hidden_state
    out = ours(x)
    h, w = size[0] // 14, size[1] // 14
    prefix = 5 if registers else 1
    spatial = hidden[:, prefix:].transpose(1, 2).reshape(2, 48, h, w)
    assert relative_error(out.spatial, spatial) < 1e-5
    assert relative_error(out.summary, hidden[:, 0]) < 1e-5


@pytest.mark.parametrize("quick_gelu, name", [(True, "tiny_clip_vit_patch16"), (False, "tiny_openclip_vit_patch16")])
def test_open_clip_matches_in_both_activation_families(tmp_path, quick_gelu, name):
    """open_clip's own CLIP (QuickGELU: OpenAI weights; GELU: LAION/DataComp) at its native size; open_clip
    has no position-grid interpolation, so other sizes have no reference to compare with."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(
        layers=2, width=64, head_width=32, patch_size=16, image_size=64, output_tokens=True
    )
    text = open_clip.CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
    theirs = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.2)
    path = hf_save(theirs, tmp_path / "open_clip.safetensors")
    ours = FrozenTeacher(name, path, input_size=64, dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled, tokens = theirs.visual(x)
    out = ours(x)
    assert relative_error(out.summary, pooled) < 1e-5
    assert relative_error(out.spatial, tokens.transpose(1, 2).reshape(2, 64, 4, 4)) < 1e-5
    # The other family's entry loads the same file without a key error and computes something else.
    other = FrozenTeacher(
        "tiny_openclip_vit_patch16" if quick_gelu else "tiny_clip_vit_patch16", path, input_size=64, dtype=torch.float32
    )
    assert relative_error(other(x).summary, pooled) > 1e-3


HF_TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, patch_size=16)


def perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 64)])
def test_clip_matches_transformers_at_every_size(tmp_path, size):
    """HF CLIP resamples its position grid per input (``interpolate_pos_encoding``): the CLIP entries too."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        **HF_TINY, image_size=64, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32
    )
    theirs = perturbed(transformers.CLIPVisionModelWithProjection(config))
    ours = FrozenTeacher(
        "tiny_clip_vit_patch16", hf_save(theirs, tmp_path / "clip.safetensors"), input_size=64, dtype=torch.float32
    )
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = theirs(pixel_values=x, interpolate_pos_encoding=True)
        tokens = theirs.vision_model.post_layernorm(out.last_hidden_state)[:, 1:]
    mine = ours(x)
    assert relative_error(mine.summary, out.image_embeds) < 1e-5
    assert relative_error(mine.spatial, tokens.transpose(1, 2).reshape(2, 64, size[0] // 16, size[1] // 16)) < 1e-5


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 64)])
def test_siglip_matches_transformers_at_every_size(tmp_path, size):
    torch.manual_seed(0)
    theirs = perturbed(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**HF_TINY, image_size=64)))
    ours = FrozenTeacher(
        "tiny_siglip_vit_patch16", hf_save(theirs, tmp_path / "siglip.safetensors"), input_size=64, dtype=torch.float32
    )
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = theirs(pixel_values=x, interpolate_pos_encoding=True)
    mine = ours(x)
    assert relative_error(mine.summary, out.pooler_output) < 1e-5
    spatial = out.last_hidden_state.transpose(1, 2).reshape(2, 64, size[0] // 16, size[1] // 16)
    assert relative_error(mine.spatial, spatial) < 1e-5


def test_a_config_json_that_names_another_activation_than_the_entry_is_refused(tmp_path):
    """A LAION-style HF CLIP (plain GELU) saved with ``save_pretrained``: the QuickGELU entry would load it
    without a key error and compute something else; its config.json says so, and the GELU entry matches."""
    from radio.errors import CheckpointError

    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        **HF_TINY, image_size=64, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32
    )
    theirs = perturbed(transformers.CLIPVisionModelWithProjection(config))
    theirs.save_pretrained(str(tmp_path / "hf"))
    path = str(tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"config.json says the model uses GELU \(exact\).*computes QuickGELU"):
        FrozenTeacher("tiny_clip_vit_patch16", path, input_size=64)
    ours = FrozenTeacher("tiny_openclip_vit_patch16", path, input_size=64, dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embeds = theirs(pixel_values=x).image_embeds
    assert relative_error(ours(x).summary, embeds) < 1e-5
