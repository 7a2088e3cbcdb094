"""build_student: sizing from the spec, C-RADIO / own-export initialisation, the engine-facing contract."""

import pytest
import torch
from models_helpers import distinct_weights
from public_layouts import cradio_hf

from radio.config.schema import BackboneConfig, VitDetConfig
from radio.errors import CheckpointError, SpecError
from radio.models.student import build_student

TINY = "c_radio_tiny_patch16"


def test_slots_default_to_max_of_registry_and_teachers():
    assert build_student(BackboneConfig(type=TINY), 2).num_cls_tokens == 4
    student = build_student(BackboneConfig(type=TINY), 6)
    assert (student.num_cls_tokens, student.num_registers, student.patch_size, student.embed_dim) == (6, 2, 16, 64)
    out = student(torch.randn(2, 3, 48, 80))
    assert out.cls_tokens.shape == (2, 6, 64) and out.spatial.shape == (2, 64, 3, 5)
    custom = build_student(BackboneConfig(type=TINY, num_cls_tokens=5, num_registers=3, cpe_max_size=128), 2)
    assert custom.patch_generator.cls_token.token.shape == (8, 64) and custom.patch_generator.grid == 8


def test_spec_errors_name_the_field():
    with pytest.raises(SpecError, match="model.backbone.type: 'demo_vit_tiny_patch16' cannot be the student"):
        build_student(BackboneConfig(type="demo_vit_tiny_patch16"), 1)
    with pytest.raises(SpecError, match="model.backbone.num_cls_tokens: 2"):
        build_student(BackboneConfig(type=TINY, num_cls_tokens=2), 3)


def test_drop_path_rate_is_honoured():
    student = build_student(BackboneConfig(type=TINY, drop_path_rate=0.3), 1)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in student.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_state_dict_follows_the_c_radio_layout():
    keys = set(build_student(BackboneConfig(type=TINY), 1).state_dict())
    assert {
        "patch_generator.embedder.weight",
        "patch_generator.pos_embed",
        "patch_generator.cls_token.token",
        "blocks.0.ls1.grandma",
        "blocks.3.mlp.fc2.bias",
    } <= keys
    assert not any(k.startswith(("norm.", "head.", "reg_token")) for k in keys)


def test_own_export_round_trip(save):
    trained = build_student(BackboneConfig(type=TINY), 5).eval()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = save(trained.state_dict(), "student_final.safetensors")
    loaded = build_student(BackboneConfig(type=TINY, pretrained_backbone_path=path), 5).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).spatial, trained(x).spatial)


def test_c_radio_release_initialises_a_student_with_more_slots(save):
    release = distinct_weights(TINY)
    path = save(cradio_hf(release.state_dict(), stale_registers=2, extras=True), "c_radio.safetensors")
    student = build_student(BackboneConfig(type=TINY, pretrained_backbone_path=path, cpe_max_size=128), 6)
    token = student.patch_generator.cls_token.token
    src = release.patch_generator.cls_token.token  # 4 CLS slots + 2 registers
    assert torch.equal(token[:4], src[:4]) and torch.equal(token[4], src[0]) and torch.equal(token[5], src[0])
    assert torch.equal(token[6:], src[4:])
    assert student.patch_generator.pos_embed.shape == (1, 64, 64)  # 16x16 grid resampled to 8x8
    assert len(student.adaptors) == 0 and student.feature_normalizer is None
    assert torch.equal(student.blocks[2].attn.qkv.weight, release.blocks[2].attn.qkv.weight)


def test_wrong_student_checkpoint_is_refused(save):
    path = save(distinct_weights("demo_vit_tiny_patch16").state_dict(), "not_radio.safetensors")
    with pytest.raises(CheckpointError, match="missing keys"):
        build_student(BackboneConfig(type=TINY, pretrained_backbone_path=path), 1)


def test_vitdet_layout_comes_from_the_config():
    student = build_student(BackboneConfig(type=TINY), 1, VitDetConfig(num_global=2, num_windowed=1))
    assert student.vitdet_windowed == [True, False, False, False]
    default = build_student(BackboneConfig(type=TINY), 1)
    assert default.vitdet_windowed == [False, False, False, False]  # 4 global blocks of 4: none windowed
