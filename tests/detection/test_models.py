"""Detectors built from the spec, teacher loading, backbone weights, load_teacher_enc_dec and export (tiny models)."""

import os
import re

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file, save_model

from radio.detection.models import (
    BACKBONE_PREFIX,
    DETECTOR_FAMILIES,
    build_detector,
    copy_teacher_enc_dec,
    detector_config,
    export_detector,
    freeze,
    load_detector,
    timm_backbone,
)
from radio.detection.schema import DetectorConfig
from radio.errors import CheckpointError, SpecError

PIXELS = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def tiny(family: str = "rtdetr", **fields) -> DetectorConfig:
    """A ~0.4M-parameter detector spec on timm's ``test_convnext`` (widths 24/32/48/64 at strides 4/8/16/32)."""
    spec = dict(
        family=family,
        backbone="test_convnext",
        out_indices=[1, 2, 3],
        hidden_dim=32,
        num_queries=10,
        num_denoising=4,
        encoder_layers=1,
        decoder_layers=2,
        ffn_dim=64,
        attention_heads=2,
    )
    spec.update(fields)
    return DetectorConfig(**spec)


def seeded(cfg: DetectorConfig, num_classes: int = 3, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_detector(cfg, num_classes, **kwargs)


def outside_backbone(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def input_widths(model):
    """The channels each level's input projection takes from the backbone."""
    projections = (
        model.model.input_proj if model.config.model_type == "deformable_detr" else model.model.encoder_input_proj
    )
    return [level[0].in_channels for level in projections]


@pytest.mark.parametrize("family", list(DETECTOR_FAMILIES))
def test_each_family_builds_from_the_spec_with_widths_from_the_backbone(family):
    model = seeded(tiny(family, out_indices=[0, 1, 2]), num_classes=5).eval()
    assert model.config.model_type == DETECTOR_FAMILIES[family][0].model_type
    assert model.config.num_labels == 5
    assert input_widths(model) == [24, 32, 48]  # test_convnext's stages 0, 1, 2
    assert model.config.d_model == 32 and model.config.num_queries == 10 and model.config.decoder_layers == 2
    with torch.no_grad():
        outputs = model(pixel_values=PIXELS)
    assert outputs.logits.shape == (2, 10, 5) and outputs.pred_boxes.shape == (2, 10, 4)


def test_rtdetr_fields_follow_the_spec_and_overrides_come_last():
    config = detector_config(
        tiny(out_indices=[2, 3], config_overrides={"decoder_layers": 1, "label_noise_ratio": 0.25}), 4
    )
    assert config.encoder_in_channels == [48, 64] and config.feat_strides == [16, 32]
    assert config.encoder_hidden_dim == config.d_model == 32 and config.decoder_in_channels == [32, 32]
    assert config.num_feature_levels == 2 and config.encode_proj_layers == [1]
    assert config.num_denoising == 4 and config.encoder_ffn_dim == config.decoder_ffn_dim == 64
    assert config.encoder_attention_heads == config.decoder_attention_heads == 2
    assert config.decoder_layers == 1 and config.label_noise_ratio == 0.25
    assert config.backbone_config.backbone == "test_convnext" and list(config.backbone_config.out_indices) == [2, 3]


def test_deformable_detr_is_single_stage_with_box_refinement_unless_overridden():
    config = detector_config(tiny("deformable_detr", out_indices=[0, 1, 2, 3]), 3)
    assert config.num_feature_levels == 4 and config.with_box_refine and not config.two_stage
    assert detector_config(tiny("deformable_detr", config_overrides={"two_stage": True}), 3).two_stage


@pytest.mark.parametrize(
    "fields, where, named, suggested",
    [
        (dict(backbone="test_convnxt"), "model", "model.backbone", "test_convnext"),
        (dict(backbone="resnet_18"), "distill.teacher", "distill.teacher.backbone", "resnet18"),
        (
            dict(config_overrides={"decoder_layer": 3}),
            "model",
            "model.config_overrides.decoder_layer",
            "decoder_layers",
        ),
        (dict(config_overrides={"eval_size": "big"}), "model", "model.config_overrides", "eval_size"),
        (dict(out_indices=[2, 3, 7]), "model", "model.out_indices", "[2, 3, 7]"),
        (dict(family="rt_detr"), "model", "model.family", "rtdetr"),
    ],
)
def test_a_bad_spec_field_is_named_with_what_would_be_valid(fields, where, named, suggested):
    with pytest.raises(SpecError, match=re.escape(named)) as error:
        detector_config(tiny(**fields), 3, where=where)
    assert suggested in str(error.value)


@pytest.mark.parametrize("family", ["rtdetr", "deformable_detr"])
def test_a_saved_folder_and_a_state_dict_load_exactly(tmp_path, family):
    cfg = tiny(family)
    trained = seeded(cfg, seed=1)
    export_detector(trained, str(tmp_path / "folder"))
    save_model(trained, str(tmp_path / "teacher.safetensors"))  # one name per tied tensor (Deformable DETR)
    for path in (tmp_path / "folder", tmp_path / "teacher.safetensors"):
        assert_same_state(load_detector(cfg, 3, str(path), where="distill.pretrained_teacher_model_path"), trained)


def test_a_teacher_that_is_not_the_spec_detector_is_refused(tmp_path):
    cfg, where = tiny(), "distill.pretrained_teacher_model_path"
    trained = seeded(cfg)
    export_detector(trained, str(tmp_path / "folder"))
    with pytest.raises(CheckpointError, match="'rt_detr'.*deformable_detr"):
        load_detector(tiny("deformable_detr"), 3, str(tmp_path / "folder"), where=where)
    with pytest.raises(CheckpointError, match="3 classes but dataset.num_classes is 4"):
        load_detector(cfg, 4, str(tmp_path / "folder"), where=where)

    state = dict(trained.state_dict())
    dropped = "model.enc_score_head.bias"
    del state[dropped]
    save_file(state, str(tmp_path / "truncated.safetensors"))
    with pytest.raises(CheckpointError, match=re.escape(dropped)):
        load_detector(cfg, 3, str(tmp_path / "truncated.safetensors"), where=where)
    save_file(state, str(tmp_path / "folder" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"missing: {re.escape(dropped)}"):
        load_detector(cfg, 3, str(tmp_path / "folder"), where=where)

    (tmp_path / "teacher.pth").write_bytes(b"\x80")
    for path in (tmp_path / "teacher.pth", tmp_path / "absent", None):
        with pytest.raises(CheckpointError, match=re.escape(where) + ".*safetensors"):
            load_detector(cfg, 3, str(path) if path else None, where=where)


def timm_name(feature_key: str) -> str:
    """A feature-network key in the whole timm model's names (timm flattens ``stem.0`` to ``stem_0``)."""
    return re.sub(r"^([a-z]+)_(\d+)\.", r"\1.\2.", feature_key)


@pytest.mark.parametrize(
    "family, backbone, out_indices",
    [("rtdetr", "test_resnet", [2, 3, 4]), ("deformable_detr", "test_convnext", [1, 2, 3])],
)
def test_pretrained_backbone_path_loads_the_timm_weights(tmp_path, family, backbone, out_indices):
    torch.manual_seed(7)
    whole = timm.create_model(backbone, pretrained=False)
    save_file(whole.state_dict(), str(tmp_path / "backbone.safetensors"))
    file = load_file(str(tmp_path / "backbone.safetensors"))
    model = seeded(
        tiny(
            family,
            backbone=backbone,
            out_indices=out_indices,
            pretrained_backbone_path=str(tmp_path / "backbone.safetensors"),
        )
    )
    loaded = timm_backbone(model).state_dict()
    assert loaded, "the detector has no timm backbone tensors"
    for key, tensor in loaded.items():
        assert torch.equal(tensor, file[timm_name(key)]), key


def test_a_backbone_file_of_another_network_is_refused(tmp_path):
    save_file(timm.create_model("test_convnext2", pretrained=False).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)model.pretrained_backbone_path: .*other.safetensors.*wrong-shape"):
        build_detector(tiny(pretrained_backbone_path=str(tmp_path / "other.safetensors")), 3)
    with pytest.raises(CheckpointError, match="model.pretrained_backbone_path: .*not found"):
        build_detector(tiny(pretrained_backbone_path=str(tmp_path / "absent.safetensors")), 3)


def test_freeze_makes_an_eval_mode_model_without_trainable_tensors():
    model = freeze(seeded(tiny()).train())
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("family", ["rtdetr", "deformable_detr"])
def test_copy_teacher_enc_dec_copies_everything_outside_the_backbone_when_shapes_agree(family):
    teacher, student = seeded(tiny(family), seed=1), seeded(tiny(family), seed=2)
    student_backbone = {k: v.clone() for k, v in timm_backbone(student).state_dict().items()}
    report = copy_teacher_enc_dec(student, teacher)
    assert sorted(report.copied) == sorted(outside_backbone(teacher)) and not report.shape_mismatch
    for name, tensor in outside_backbone(teacher).items():
        assert torch.equal(student.state_dict()[name], tensor), name
    for name, tensor in timm_backbone(student).state_dict().items():
        assert torch.equal(tensor, student_backbone[name]), name


def test_copy_teacher_enc_dec_skips_only_the_input_projections_of_another_backbone():
    teacher, student = seeded(tiny(backbone="test_convnext2"), seed=1), seeded(tiny(), seed=2)
    report = copy_teacher_enc_dec(student, teacher)
    assert sorted(report.shape_mismatch) == [f"model.encoder_input_proj.{i}.0.weight" for i in range(3)]
    assert len(report.copied) == len(outside_backbone(teacher)) - 3 and not report.missing_in_student
    assert report.describe().startswith(f"copied {len(report.copied)} of {len(report.copied) + 3} teacher tensors")


def test_copy_teacher_enc_dec_reports_what_a_narrower_student_cannot_take():
    teacher, student = seeded(tiny(), seed=1), seeded(tiny(hidden_dim=16, decoder_layers=1), seed=2)
    before = outside_backbone(student)
    report = copy_teacher_enc_dec(student, teacher)
    assert report.shape_mismatch and report.missing_in_student
    # what the student lacks is the teacher's second decoder layer and that layer's heads
    assert all(re.match(r"model\.decoder\.\w+\.1\.", name) for name in report.missing_in_student)
    after = student.state_dict()
    for name in report.copied:
        assert torch.equal(after[name], teacher.state_dict()[name]), name
    for name in report.shape_mismatch:
        assert torch.equal(after[name], before[name]), name
    assert f"{len(report.shape_mismatch)} differ in shape" in report.describe()
    assert f"{len(report.missing_in_student)} are not in the student" in report.describe()


@pytest.mark.parametrize("family", list(DETECTOR_FAMILIES))
def test_an_exported_folder_reloads_with_identical_outputs(tmp_path, family, monkeypatch):
    from transformers import AutoModelForObjectDetection

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = seeded(tiny(family)).eval()
    export_detector(model, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    reloaded = AutoModelForObjectDetection.from_pretrained(str(tmp_path)).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        expected, found = model(pixel_values=PIXELS), reloaded(pixel_values=PIXELS)
    assert torch.equal(found.logits, expected.logits) and torch.equal(found.pred_boxes, expected.pred_boxes)


def test_a_random_backbone_under_frozen_norms_keeps_no_zero_scale():
    """timm zero-initialises each residual block's last norm; Deformable DETR freezes its norms, so a random
    backbone would keep those blocks switched off. Frozen norms of random backbones start at scale one."""
    from radio.detection.models import build_detector, timm_backbone

    cfg = tiny("deformable_detr", backbone="resnet10t", out_indices=[2, 3, 4], ffn_dim=32)
    norms = [m for m in timm_backbone(build_detector(cfg, 3)).modules() if "Frozen" in type(m).__name__]
    assert norms and all(m.weight.any() for m in norms)
    import timm

    assert any(not m.weight.any() for m in timm.create_model("resnet10t").modules() if hasattr(m, "running_var"))


def test_a_teacher_folder_unlike_its_spec_section_is_refused(tmp_path):
    """The folder's config.json defines the teacher that runs: a section saying otherwise would be what
    config.yaml records and what the checks (matching: index query counts) read."""
    cfg, where = tiny(), "distill.pretrained_teacher_model_path"
    export_detector(seeded(cfg), str(tmp_path / "folder"))
    other = tiny(hidden_dim=cfg.hidden_dim * 2, num_queries=cfg.num_queries + 5)
    with pytest.raises(CheckpointError) as caught:
        load_detector(other, 3, str(tmp_path / "folder"), where=where)
    for words in (f"hidden_dim={cfg.hidden_dim}", f"num_queries={cfg.num_queries}", "make distill.teacher describe"):
        assert words in str(caught.value)
