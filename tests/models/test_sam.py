"""SAM image encoders: spatial-only teachers, the segment_anything layout, parity with segment_anything."""

from functools import partial

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed_nhwc

from radio.errors import SpecError
from radio.models.checkpoint_io import LoadReport, compare, read_state_dict
from radio.models.registry import create_model, get_model_info
from radio.models.sam import is_segment_anything_layout, segment_anything_to_timm
from radio.models.teacher import FrozenTeacher, teacher_features
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

TINY = "tiny_sam_vit_patch16"
# segment_anything's ImageEncoderViT arguments matching TINY (build_sam's, at a test size).
TINY_SAM_ARGS = dict(
    patch_size=16,
    embed_dim=64,
    depth=2,
    num_heads=2,
    out_chans=32,
    norm_layer=partial(nn.LayerNorm, eps=1e-6),
    use_rel_pos=True,
    window_size=5,
    global_attn_indexes=(1,),
)
DECODER_KEYS = {
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "prompt encoder",
    "mask_decoder.iou_token.weight": "mask decoder",
}
ENTRIES = {"sam_vit_b": "samvit_base_patch16", "sam_vit_l": "samvit_large_patch16", "sam_vit_h": "samvit_huge_patch16"}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


def to_sam_layout(state: dict) -> dict:
    """timm samvit keys -> an original SAM checkpoint's (``image_encoder.*``, MLPs ``lin1``/``lin2``)."""
    return {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v for k, v in state.items()}


def load(model: nn.Module, state: dict) -> LoadReport:
    report = LoadReport(path="test", fmt="segment_anything")
    model.load_state_dict(segment_anything_to_timm(state, model, report), strict=True)
    return report


@pytest.fixture
def sam_encoder():
    """segment_anything's ImageEncoderViT at 256 px with every tensor perturbed (its relative position tables
    and position grid start at zero: perturbed strongly so a swapped or misplaced table shows)."""
    modeling = pytest.importorskip("segment_anything.modeling")
    torch.manual_seed(0)
    encoder = modeling.ImageEncoderViT(img_size=256, **TINY_SAM_ARGS).eval()
    with torch.no_grad():
        for key, tensor in encoder.state_dict().items():
            scale = 0.5 if key.endswith(("rel_pos_h", "rel_pos_w", "pos_embed")) else 0.05
            tensor.add_(torch.randn_like(tensor) * scale)
    return encoder


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entries_are_timms_samvit_and_spatial_only(name):
    """Same keys and shapes as timm's samvit (the shapes encode width, depth, window and global blocks);
    a 256-channel spatial map at 1024 px and no summary."""
    info = get_model_info(name)
    with torch.device("meta"):
        model = create_model(name)
        reference = timm.create_model(ENTRIES[name], pretrained=False, num_classes=0)
        summary, spatial, _ = teacher_features(model, torch.empty(1, 3, 1024, 1024), info.patch_size)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert (info.embed_dim, info.summary_dim, info.has_summary, info.img_size, info.patch_size) == (
        256,
        0,
        False,
        1024,
        16,
    )
    assert model.pos_embed.shape[1:3] == (64, 64) and model.trunk_dim == reference.embed_dim
    assert tuple(spatial.shape) == (1, 256, 64, 64) and tuple(summary.shape) == (1, 0)
    assert all(block.norm1.eps == 1e-6 for block in model.blocks)  # SAM's, not timm's default 1e-5


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_timm_and_segment_anything_layouts_map_onto_every_entry(name):
    with torch.device("meta"):
        model = create_model(name)
        timm_state = timm.create_model(ENTRIES[name], pretrained=False, num_classes=0).state_dict()
    for state in (timm_state, {**to_sam_layout(timm_state), **dict.fromkeys(DECODER_KEYS, torch.empty(1))}):
        report = LoadReport(path="test", fmt="")
        compare(segment_anything_to_timm(state, model, report), model, report)
        assert report.ok, report.describe()
    assert not is_segment_anything_layout(timm_state)


def test_matches_segment_anything_image_encoder(sam_encoder, save):
    """A SAM checkpoint (image encoder beside prompt encoder / mask decoder keys), read back from a file,
    mapped and loaded strictly: the registry model's spatial map is ImageEncoderViT's output."""
    state = {"image_encoder." + k: v for k, v in sam_encoder.state_dict().items()}
    state.update({k: torch.randn(2, 4) for k in DECODER_KEYS})
    state = read_state_dict(save(state, "sam_tiny.pth"))
    assert is_segment_anything_layout(state)
    model = create_model(TINY).eval()
    report = load(model, state)
    assert set(report.dropped) == set(DECODER_KEYS)
    assert all(part in report.dropped[k] for k, part in DECODER_KEYS.items())
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = sam_encoder(x)
        summary, spatial, _ = teacher_features(model, x, 16)
    assert spatial.shape == expected.shape == (2, 32, 16, 16) and summary.shape == (2, 0)
    assert relative_error(spatial, expected) <= 1e-5
    with torch.no_grad():  # in float64 both compute the same function up to rounding
        error64 = relative_error(model.double().forward_features(x.double()), sam_encoder.double()(x.double()))
    assert error64 <= 1e-12


def test_other_input_size_matches_segment_anything_given_the_same_position_grid(sam_encoder):
    """ImageEncoderViT cannot run at another size (it adds its fixed position grid); given timm's resampled
    grid it can, and its relative position interpolation then agrees with timm's at 288 px (grid 18 in
    windows of 5). A model built for 288 px, loaded from the 256 px checkpoint, computes the same."""
    modeling = pytest.importorskip("segment_anything.modeling")
    x = torch.randn(1, 3, 288, 288)
    with pytest.raises(RuntimeError):
        sam_encoder(x)
    state = {"image_encoder." + k: v for k, v in sam_encoder.state_dict().items()}
    native = create_model(TINY).eval()
    load(native, state)

    at_288 = modeling.ImageEncoderViT(img_size=288, **TINY_SAM_ARGS).eval()
    with torch.no_grad():
        for key, tensor in sam_encoder.state_dict().items():
            module_name, _, attr = key.rpartition(".")
            module = at_288.get_submodule(module_name)
            if key == "pos_embed":
                tensor = resample_abs_pos_embed_nhwc(tensor, [18, 18])
            setattr(module, attr, nn.Parameter(tensor.clone()))  # global blocks keep the 31-row tables
        expected = at_288(x)
        assert relative_error(native.forward_features(x), expected) <= 1e-5

    built_288 = create_model(TINY, img_size=288).eval()
    report = load(built_288, state)
    assert built_288.pos_embed.shape[1:3] == (18, 18) and len(report.notes) == 2
    with torch.no_grad():
        assert relative_error(built_288.forward_features(x), native.forward_features(x)) <= 1e-6


def test_timm_layout_loads_and_bare_image_encoder_layout_too(sam_encoder):
    model = create_model(TINY).eval()
    reference = create_model(TINY).eval()
    load(reference, {"image_encoder." + k: v for k, v in sam_encoder.state_dict().items()})
    report = load(model, reference.state_dict())  # plain timm samvit layout
    assert not report.dropped and not report.notes
    bare = create_model(TINY).eval()
    assert is_segment_anything_layout(sam_encoder.state_dict())
    load(bare, sam_encoder.state_dict())  # ImageEncoderViT's own state dict, no prefix
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), reference.forward_features(x))
        assert torch.equal(bare.forward_features(x), reference.forward_features(x))


def test_frozen_sam_teacher_returns_a_spatial_map_and_no_summary():
    teacher = FrozenTeacher(TINY, None, input_size=256, dtype=torch.float32)
    out = teacher(torch.randn(2, 3, 256, 320))
    assert out.summary is None and out.logits is None
    assert tuple(out.spatial.shape) == (2, 32, 16, 20)
    assert (teacher.has_summary, teacher.summary_dim, teacher.embed_dim) == (False, 0, 32)


SPEC = """
results_dir: /tmp/out
model: {backbone: {type: c_radio_tiny_patch16}}
dataset:
  img_size: 64
  train_dataset:
    tar_data_sources: [{root_dir: /data/a}]
distill:
  teacher:
    - model: {backbone: {type: tiny_sam_vit_patch16}}
      pretrained_teacher_model_path: /w/sam.pth
      input_size: 256
"""


def test_spec_with_a_sam_teacher_resolves_auto_to_spatial(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    (teacher,) = resolve_teachers(load_run_config(str(path), []))
    assert (teacher.mode, teacher.input_size, teacher.summary_token_idx) == ("spatial", 256, None)


@pytest.mark.parametrize("mode", ["summary", "combo"])
def test_spec_refuses_summary_modes_for_a_sam_teacher(tmp_path, mode):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    with pytest.raises(SpecError) as info:
        load_run_config(str(path), [f"distill.teacher.0.mode={mode}"])
    message = str(info.value)
    assert "distill.teacher[0].mode (teacher tiny_sam)" in message and "yields none" in message  # its default name
    assert len(message.splitlines()) == 1
