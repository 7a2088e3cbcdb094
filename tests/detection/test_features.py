"""Forward hooks on tiny transformers detectors, and the student→teacher projection only where widths differ."""

import pytest
import torch
from torch import nn

from radio.detection.features import (
    FeatureCapture,
    FeatureProjection,
    build_feature_projection,
    rtdetr_query_selection,
)
from radio.detection.losses import feature_kd_loss
from radio.errors import SpecError
from tests.detection.conftest import tiny_deformable_detr, tiny_rtdetr

PIXELS = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def captured(model, names):
    with FeatureCapture(model, names) as capture:
        model.eval()
        with torch.no_grad():
            outputs = model(pixel_values=PIXELS)
        return {name: capture[name] for name in names}, outputs


def shapes(levels):
    return [tuple(t.shape) for t in levels]


def test_rtdetr_hooks_capture_each_named_feature_per_level():
    model = tiny_rtdetr(hidden=32)
    features, outputs = captured(
        model, ["backbone", "srcs", "encoder", "dsrcs", "enc_output", "model.encoder_input_proj.2"]
    )
    grids = [(8, 8), (4, 4), (2, 2)]  # 64 px at strides 8/16/32
    assert shapes(features["backbone"]) == [(2, c, *g) for c, g in zip([32, 48, 64], grids)]
    for name in ("srcs", "encoder", "dsrcs"):
        assert shapes(features[name]) == [(2, 32, *g) for g in grids], name
    assert shapes(features["enc_output"]) == [(2, 64 + 16 + 4, 32)]
    assert torch.equal(features["model.encoder_input_proj.2"][0], features["srcs"][2])  # a raw module path
    queries, scores, boxes = rtdetr_query_selection(outputs, features["enc_output"][0])
    assert queries.shape == (2, 12, 32) and scores.shape == (2, 12) and torch.equal(boxes, outputs.enc_topk_bboxes)
    # the re-done top-k picks the locations whose logits the model itself reported
    chosen = torch.topk(outputs.enc_outputs_class.max(-1).values, 12, dim=1).indices
    assert torch.equal(
        outputs.enc_outputs_class.gather(1, chosen[..., None].expand(-1, -1, 3)), outputs.enc_topk_logits
    )


def test_deformable_detr_hooks_capture_maps_and_encoder_tokens():
    features, _ = captured(tiny_deformable_detr(hidden=32), ["backbone", "srcs", "encoder"])
    assert shapes(features["srcs"]) == [(2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    assert shapes(features["encoder"]) == [(2, 84, 32)]


def test_an_unknown_feature_name_lists_the_aliases():
    with pytest.raises(SpecError, match="aliases: backbone, srcs, encoder, dsrcs, enc_output"):
        FeatureCapture(tiny_rtdetr(), ["model.no_such_module"])


def test_hooks_come_off_and_a_feature_missing_from_the_last_forward_is_an_error():
    model = tiny_rtdetr()
    capture = FeatureCapture(model, ["srcs"])
    with pytest.raises(RuntimeError, match="'srcs' was not produced"):
        capture["srcs"]
    capture.remove()
    with torch.no_grad():
        model.eval()(pixel_values=PIXELS)
    with pytest.raises(RuntimeError):
        capture["srcs"]


def test_projection_only_when_widths_differ_and_it_trains_the_student_towards_the_teacher():
    student_features, _ = captured(tiny_rtdetr(seed=1, hidden=16), ["srcs", "backbone"])
    teacher_features, _ = captured(tiny_rtdetr(seed=2, hidden=32), ["srcs", "backbone"])
    assert build_feature_projection(student_features["backbone"], teacher_features["backbone"]) is None
    projection = build_feature_projection(student_features["srcs"], teacher_features["srcs"])
    assert isinstance(projection, FeatureProjection)
    assert all(isinstance(level, nn.Conv2d) and level.kernel_size == (1, 1) for level in projection.levels)
    projected = projection(student_features["srcs"])
    assert shapes(projected) == shapes(teacher_features["srcs"])
    feature_kd_loss(projected, teacher_features["srcs"], "L2").backward()
    assert all(level.weight.grad is not None for level in projection.levels)


def test_projection_keeps_identity_on_levels_that_already_match_and_maps_tokens():
    projection = FeatureProjection([8, 16], [8, 32])
    assert isinstance(projection.levels[0], nn.Identity) and isinstance(projection.levels[1], nn.Conv2d)
    tokens = torch.randn(2, 10, 16)
    out = projection([torch.randn(2, 10, 8), tokens])[1]
    assert out.shape == (2, 10, 32)
    conv = projection.levels[1]
    assert torch.allclose(out, tokens @ conv.weight[:, :, 0, 0].T + conv.bias, atol=1e-5)
