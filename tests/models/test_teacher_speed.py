"""Teacher-side switches (radio/models/teacher_speed.py): compiled teachers equal eager ones, every registry family
runs fused attention, FP8 is refused without FP8 hardware and stays close to bf16 on torchao's CPU path."""

import dataclasses

import pytest
import torch
from models_helpers import distinct_weights
from safetensors.torch import save_file

from radio.errors import SpecError
from radio.models import teacher_speed
from radio.models.registry import get_model_info
from radio.models.teacher import FrozenTeacher, TeacherOutput
from radio.models.teacher_speed import (
    attention_report,
    compile_featurizer,
    enable_fused_attention,
    quantize_fp8,
    switch_cosines,
)
from radio.run.build import build_teachers
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

# One small entry per family the registry ships: timm ViT, DINOv2 (+ registers), CLIP (OpenAI, open_clip,
# CLIPA) and SigLIP on the reference grid, SAM, C-RADIO.
FAMILIES = [
    "demo_vit_tiny_patch16",
    "tiny_dinov2_vit_patch14",
    "tiny_dinov2_vit_patch14_reg4",
    "tiny_clip_vit_patch16",
    "tiny_openclip_vit_patch16",
    "tiny_clipa_vit_patch14",
    "tiny_siglip_vit_patch16",
    "tiny_sam_vit_patch16",
    "c_radio_tiny_patch16",
]


def teacher_file(tmp_path, name: str) -> str:
    """Random weights with every tensor perturbed (layer scales included, so every block matters)."""
    path = str(tmp_path / f"{name}_demo.safetensors")
    save_file({k: v.contiguous() for k, v in distinct_weights(name).state_dict().items()}, path)
    return path


def images(name: str, batch: int = 2, scale: float = 1.0) -> torch.Tensor:
    side = get_model_info(name).img_size
    torch.manual_seed(1)
    return torch.randn(batch, 3, int(side * scale), side)


@pytest.mark.slow
def test_compiled_teacher_equals_eager_and_compiles_once_per_shape(tmp_path):
    name = "demo_vit_tiny_patch16"
    path = teacher_file(tmp_path, name)
    eager = FrozenTeacher(name, path, input_size=64, dtype=torch.float32)
    compiled = FrozenTeacher(name, path, input_size=64, dtype=torch.float32, compiled=True)
    torch._dynamo.utils.counters.clear()
    for x in (images(name), images(name, batch=3, scale=1.5), images(name)):  # a stochastic size, then back
        a, b = eager(x), compiled(x)
        torch.testing.assert_close(b.summary, a.summary, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.spatial, a.spatial, atol=1e-5, rtol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # the repeated shape reused its graph


def test_recompiles_are_bounded_per_teacher(monkeypatch):
    monkeypatch.setattr(teacher_speed, "COMPILE_SHAPE_LIMIT", 2)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(tuple(example_inputs[0].shape))
        return gm.forward

    fn = compile_featurizer(lambda x: (x * 2).sum(dim=1), backend=backend)
    other = compile_featurizer(lambda x: (x * 2).sum(dim=1), backend=backend)
    for batch in (1, 2, 3, 4):  # shapes 3 and 4 are past the limit: eager, still correct
        x = torch.randn(batch, 5)
        torch.testing.assert_close(fn(x), (x * 2).sum(dim=1))
    assert graphs == [(1, 5), (2, 5)]
    other(torch.randn(7, 5))  # another teacher has its own limit
    assert graphs[-1] == (7, 5)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_registry_family_runs_fused_attention(name):
    teacher = FrozenTeacher(name, None, input_size=get_model_info(name).img_size, dtype=torch.float32)
    report = attention_report(teacher, lambda: teacher(images(name)))
    depth = get_model_info(name).depth
    assert len(report) >= depth and all(report.values()), report


def test_unfused_attention_is_reported_and_switched_on():
    teacher = FrozenTeacher("tiny_siglip_vit_patch16", None, input_size=64, dtype=torch.float32)
    x = images("tiny_siglip_vit_patch16")
    fused = teacher(x)
    for module in teacher.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False  # as under TIMM_FUSED_ATTN=0
    report = attention_report(teacher, lambda: teacher(x))
    assert set(report) == {"model.blocks.0.attn", "model.blocks.1.attn", "model.attn_pool"}
    assert not any(report.values())
    assert sorted(enable_fused_attention(teacher)) == sorted(report)
    assert all(attention_report(teacher, lambda: teacher(x)).values())
    torch.testing.assert_close(teacher(x).spatial, fused.spatial)


def test_fp8_is_refused_without_fp8_hardware_naming_the_switch():
    with pytest.raises(SpecError) as exc:
        FrozenTeacher("demo_vit_tiny_patch16", None, input_size=64, fp8=True)
    message = str(exc.value)
    assert "distill.teacher_fp8" in message and "compute capability >= 8.9" in message
    assert "the teachers run on cpu" in message and "to run the teachers in bf16" in message


def test_fp8_refusal_names_torchao_and_precision(monkeypatch):
    monkeypatch.setattr(teacher_speed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpecError, match=r"torchao is not installed \(pip install torchao\)"):
        teacher_speed.check_fp8_supported(torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(teacher_speed, "fp8_unavailable", lambda device: None)
    with pytest.raises(SpecError, match="runs in float32"):
        teacher_speed.check_fp8_supported(torch.device("cuda"), torch.float32)


SPEC = """
results_dir: /tmp/out
model: {backbone: {type: c_radio_tiny_patch16}}
dataset: {img_size: 64, train_dataset: {tar_data_sources: [{root_dir: /data/a}]}}
distill:
  teacher_compile: true
  teacher:
    - {name: a, model: {backbone: {type: demo_vit_tiny_patch16}}}
    - {name: b, model: {backbone: {type: tiny_dinov2_vit_patch14}}, teacher_compile: false, teacher_fp8: true}
"""


def test_switches_resolve_per_teacher_and_build_refuses_fp8_naming_the_teacher(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    a, b = resolve_teachers(load_run_config(str(spec), []))
    assert (a.teacher_compile, a.teacher_fp8, b.teacher_compile, b.teacher_fp8) == (True, False, False, True)
    with pytest.raises(SpecError, match=r"teacher b \(distill.teacher\[1\]\): distill.teacher_fp8"):
        build_teachers([dataclasses.replace(b, checkpoint_path=None)], num_classes=0, device=torch.device("cpu"))


def test_switch_cosines_per_teacher():
    spatial = torch.randn(2, 8, 3, 3)
    reference = {
        "clip": TeacherOutput(spatial=spatial, summary=torch.randn(2, 4), logits=None),
        "sam": TeacherOutput(spatial=spatial, summary=None, logits=None),
    }
    switched = {"clip": dataclasses.replace(reference["clip"], spatial=-spatial), "sam": reference["sam"]}
    report = switch_cosines(reference, switched)
    assert report["clip"]["summary_min"] == pytest.approx(1.0) and report["clip"]["spatial_mean"] == pytest.approx(-1)
    assert set(report["sam"]) == {"spatial_min", "spatial_mean"} and report["sam"]["spatial_min"] == pytest.approx(1)


@pytest.fixture
def fp8_on_cpu(monkeypatch):
    """torchao's float8 path on CPU: the same quantised weights and activations (e4m3, per-row scales), the
    matmul by ``torch._scaled_mm``'s CPU kernel. torchao refuses CPUs for speed's sake, so its check is lifted."""
    pytest.importorskip("torchao", reason="torchao is not installed: the FP8 path cannot be emulated")
    from torchao.quantization import quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    monkeypatch.setattr(teacher_speed, "fp8_unavailable", lambda device: None)


@pytest.mark.parametrize(
    "name", ["demo_vit_tiny_patch16", "tiny_siglip_vit_patch16", "tiny_sam_vit_patch16", "c_radio_tiny_patch16"]
)
def test_fp8_teacher_stays_close_to_bf16(tmp_path, fp8_on_cpu, name):
    from torchao.quantization import Float8Tensor

    path = teacher_file(tmp_path, name)
    size = get_model_info(name).img_size
    bf16 = FrozenTeacher(name, path, input_size=size)
    fp8 = FrozenTeacher(name, path, input_size=size, fp8=True)
    blocks = [n for n, m in fp8.model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]
    assert fp8.fp8_layers == blocks and len(blocks) == 4 * get_model_info(name).depth
    assert all(isinstance(fp8.model.get_submodule(n).weight, Float8Tensor) for n in blocks)
    others = [m for n, m in fp8.model.named_modules() if isinstance(m, torch.nn.Linear) and n not in blocks]
    assert not any(isinstance(m.weight, Float8Tensor) for m in others)  # patch embedding, heads, pooling
    x = images(name, batch=4)
    cos = switch_cosines({name: bf16(x)}, {name: fp8(x)})[name]
    # SAM pads its attention windows with zero rows: without the activation floor they quantise to NaN.
    assert min(cos.values()) >= 0.99, cos


def test_fp8_refuses_a_teacher_without_block_linears(fp8_on_cpu):
    with pytest.raises(SpecError, match="no transformer-block Linear layer"):
        FrozenTeacher("timm/resnet18", None, input_size=64, fp8=True)


def test_quantize_fp8_leaves_unsuited_layers_in_bf16(fp8_on_cpu):
    teacher = FrozenTeacher("demo_vit_tiny_patch16", None, input_size=64)
    with torch.no_grad():
        teacher.model.blocks[0].mlp.fc2.weight[3].zero_()  # a zero row would have a zero scale
    layers = quantize_fp8(teacher.model)
    assert "blocks.0.mlp.fc2" not in layers and "blocks.1.mlp.fc2" in layers and "head" not in layers
