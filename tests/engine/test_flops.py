"""The analytic FLOP count reproduces the performance goals' figure (docs/benchmarks.md) for the seed example (≈ 1.46 TFLOP per image)."""

import pytest

from radio.engine.flops import StepFlops, TeacherCost, VitShape, vit_flops
from radio.models.registry import get_model_info


def shape(name: str) -> VitShape:
    info = get_model_info(name)
    return VitShape(info.depth, info.embed_dim, info.patch_size, info.num_prefix_tokens)


def test_seed_example_flops_per_image():
    flops = StepFlops(
        shape("c_radio_v3_vit_base_patch16_reg4_dinov2"),
        {
            "dino": TeacherCost(shape("c_radio_v3_vit_huge_patch16_reg4_dinov2")),
            "siglip": TeacherCost(shape("vit_h_14_siglip_clipa_224")),
        },
    )
    per_image = flops.per_image({"student": 224, "dino": 432, "siglip": 224})
    assert per_image == pytest.approx(1.46e12, rel=0.01)
    # Teachers are ~92 % of the work (docs/benchmarks.md).
    student_only = StepFlops(flops.student, {}).per_image({"student": 224})
    assert 1 - student_only / per_image == pytest.approx(0.925, abs=0.01)


def test_mosaic_and_featsharp_teacher_costs():
    sam = shape("sam_vit_h")
    one_input = vit_flops(sam.depth, sam.width, sam.tokens(1024))
    # 2x2 mosaic: each 512 px sample is a quarter of one 1024 px forward.
    assert TeacherCost(sam, mosaic=2).per_image(512) == pytest.approx(one_input / 4)
    assert TeacherCost(sam).per_image(1024) == pytest.approx(one_input)
    dino = shape("dinov2_vit_large_patch14_reg4")
    at_native = vit_flops(dino.depth, dino.width, dino.tokens(448))
    # FeatSharp 2x: an 896 px view, the low-res pass + 4 tiles at 448, plus the upsampler's own work.
    assert TeacherCost(dino, featsharp_factor=2, extra=1e9).per_image(896) == pytest.approx(5 * at_native + 1e9)
    assert TeacherCost(dino, featsharp_factor=1, extra=0.0).per_image(448) == pytest.approx(at_native)


def test_window_reports_model_tflops_and_mfu_against_the_peak():
    from types import SimpleNamespace

    import torch

    from radio.engine.metrics import MetricsWindow
    from radio.engine.objective import MicroBatchLoss

    window = MetricsWindow(["a"], torch.device("cpu"), peak_tflops=100.0)
    batch = SimpleNamespace(keys=["k"] * 4, sources=torch.zeros(4, dtype=torch.int64))
    result = MicroBatchLoss(torch.tensor(1.0), {}, torch.zeros(0, dtype=torch.bool), {})
    window.add(batch, result, flops=3e12)
    values = window.flush(SimpleNamespace(num_processes=1), {})
    assert values["mfu"] == pytest.approx(values["tflops_per_s"] / 100.0)
    assert values["tflops_per_s"] == pytest.approx(3.0 * values["images_per_s"] / 4)
