"""``distill.teacher_precision``: the dtype teachers are loaded and run in, the same in training and in
``radio eval``; its default is bf16 on GPUs and the run's ``train.precision`` on CPU."""

import dataclasses
import os
from types import SimpleNamespace

import pytest
import torch

from radio.errors import SpecError
from radio.eval.evaluate import fidelity_teachers
from radio.run.build import build_components, teacher_dtype
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers, teacher_precision
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
CPU = torch.device("cpu")


def spec(*overrides: str):
    return load_run_config(QUICKSTART_SPEC, list(overrides))


@pytest.mark.parametrize(
    "overrides, cpu, cuda",
    [
        (["train.precision=fp32"], "fp32", "bf16"),
        (["train.precision=bf16"], "bf16", "bf16"),
        (["train.precision=fp16"], "fp32", "bf16"),
        (["train.precision=bf16", "distill.teacher_precision=fp32"], "fp32", "fp32"),
        (["train.precision=fp32", "distill.teacher_precision=bf16"], "bf16", "bf16"),
    ],
)
def test_default_is_bf16_on_gpu_and_the_run_precision_on_cpu(overrides, cpu, cuda):
    cfg = spec(*overrides)
    assert (teacher_precision(cfg, "cpu"), teacher_precision(cfg, "cuda")) == (cpu, cuda)
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    assert (teacher_dtype(cfg, CPU), teacher_dtype(cfg, torch.device("cuda", 0))) == (dtypes[cpu], dtypes[cuda])


@pytest.mark.parametrize("value", ["fp16", "float32", "BF16"])
def test_a_bad_teacher_precision_names_the_field_and_the_choices(value):
    with pytest.raises(SpecError, match=rf"distill.teacher_precision='{value}' is not valid; use one of: bf16, fp32"):
        spec(f"distill.teacher_precision={value}")


def test_fp8_teachers_with_fp32_teacher_precision_are_refused():
    with pytest.raises(SpecError, match=r"distill.teacher_fp8 quantises bf16 teachers.*teacher_precision is fp32"):
        spec("distill.teacher_fp8=true", "distill.teacher_precision=fp32")


def computed_in_bf16(t: torch.Tensor) -> bool:
    """Float32 outputs whose every value a bf16 number holds: what a teacher run in bf16 returns."""
    return torch.equal(t, t.to(torch.bfloat16).float())


def check_teachers(teachers, dtype: torch.dtype, images: torch.Tensor, specs) -> None:
    from radio.run.build import teacher_outputs

    assert teachers, "no teacher built"
    for name, teacher in teachers.items():
        assert teacher.dtype == dtype and {p.dtype for p in teacher.model.parameters()} == {dtype}, name
    for name, out in teacher_outputs(teachers, specs, images).items():
        assert out.spatial.dtype == torch.float32  # targets are float32 either way ...
        assert computed_in_bf16(out.spatial) == (dtype == torch.bfloat16), name  # ... computed in the dtype


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_training_builds_and_runs_teachers_in_teacher_precision(demo_assets, tmp_path, precision, dtype):
    overrides = tiny_run_overrides(demo_assets, str(tmp_path / "r"), f"distill.teacher_precision={precision}")
    cfg = spec(*overrides)
    teachers_cfg = resolve_teachers(cfg)
    parts = build_components(cfg, teachers_cfg, device=CPU, rank=0, world_size=1)
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    check_teachers(parts.teachers, dtype, images, teachers_cfg)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_eval_runs_teachers_in_the_runs_teacher_precision(precision, dtype):
    cfg = spec(f"distill.teacher_precision={precision}")
    teachers = [dataclasses.replace(t, checkpoint_path=None) for t in resolve_teachers(cfg)]  # random weights
    built = fidelity_teachers(SimpleNamespace(cfg=cfg, teachers=teachers), CPU)
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    check_teachers(built, dtype, images, teachers)


@pytest.mark.parametrize("extra", [[], ["distill.teacher_precision=bf16"]])
def test_print_config_says_the_precision_teachers_run_in_here(capsys, extra):
    from radio.cli import main as radio_main

    device = "cuda" if torch.cuda.is_available() else "cpu"
    expected = teacher_precision(spec(*extra), device)
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, "--print-config", *extra]) == 0
    assert f"# teachers load and run in {expected} on this machine ({device}; " in capsys.readouterr().out
