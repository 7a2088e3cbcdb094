"""Teachers at very different resolutions in one step: a SAM-like teacher at 4x the student's grid (directly
or as a 2x2 mosaic) next to two small teachers; a FeatSharp-upsampled teacher; exact resume with both."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from radio.cli import main as radio_main
from radio.engine.loop import run
from radio.models.registry import create_model
from radio.run.build import build_teachers, build_view_plan, teacher_outputs
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers
from tests.conftest import REPO, tiny_run_overrides
from tests.models.featsharp_files import write_featsharp_checkpoint

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
SAM_INPUT = 256  # 16x16 tokens: 4x the student's 4x4 grid at 64 px


def sam_weights(tmp_path) -> str:
    torch.manual_seed(0)
    state = create_model("tiny_sam_vit_patch16", img_size=SAM_INPUT).state_dict()
    path = str(tmp_path / "tiny_sam.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def three_teachers(demo_assets, sam_path: str, *, mosaic: int = 1, demo_b: str = "") -> str:
    """demo_a follows the student (64 px), demo_b at 112 px (patch 14), SAM at 256 px; ``demo_b``: extra
    fields for demo_b's entry."""
    weights = os.path.join(demo_assets, "weights")
    return (
        "distill.teacher=["
        f"{{name: demo_a, model: {{backbone: {{type: demo_vit_tiny_patch16}}}}, pretrained_teacher_model_path: "
        f"{weights}/demo_vit_tiny_patch16.DEMO_RANDOM_INIT.safetensors}}, "
        f"{{name: demo_b, model: {{backbone: {{type: demo_vit_tiny_patch14}}}}, pretrained_teacher_model_path: "
        f"{weights}/demo_vit_tiny_patch14.DEMO_RANDOM_INIT.safetensors, mode: spatial, input_size: 112{demo_b}}}, "
        f"{{name: sam, model: {{backbone: {{type: tiny_sam_vit_patch16}}}}, pretrained_teacher_model_path: {sam_path}, "
        f"input_size: {SAM_INPUT}, mode: spatial, mosaic: {mosaic}}}]"
    )


def overrides(demo_assets, results: str, teachers: str, *extra: str) -> list:
    base = [o for o in tiny_run_overrides(demo_assets, results, *extra) if not o.startswith("distill.teacher.")]
    return base + [teachers]


def metric_rows(results: str) -> list:
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def target_grids(cfg) -> dict:
    """Each teacher's spatial target grid per sample at step 0, computed as training computes it."""
    specs = resolve_teachers(cfg)
    teachers = build_teachers(specs, num_classes=0, device=torch.device("cpu"))
    plan = build_view_plan(cfg, specs, student_patch=16)
    size = plan.max_size(0)
    images = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
    outputs = teacher_outputs(teachers, specs, images, plan.sizes_for_step(0))
    assert all(out.spatial.shape[0] == len(images) for out in outputs.values())
    return {name: tuple(out.spatial.shape[-2:]) for name, out in outputs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("mosaic", [1, 2])
def test_three_teachers_at_three_resolutions_all_learn(demo_assets, tmp_path, mosaic):
    results = str(tmp_path / "r")
    teachers = three_teachers(demo_assets, sam_weights(tmp_path), mosaic=mosaic)
    extra = ("train.max_steps=30", "dataset.batch_size=8")
    cfg = load_run_config(QUICKSTART_SPEC, overrides(demo_assets, results, teachers, *extra))
    grids = target_grids(cfg)
    # A 2x2 mosaic gives each of the 5 samples a quarter of SAM's 16x16 map (the 6th..8th tiles are padding).
    assert grids == {"demo_a": (4, 4), "demo_b": (8, 8), "sam": (16, 16) if mosaic == 1 else (8, 8)}

    run(cfg)
    rows = metric_rows(results)
    assert len(rows) == 30
    for name in ("demo_a", "demo_b", "sam"):
        losses = [r[f"loss/{name}"] for r in rows]
        assert sum(losses[-5:]) < 0.6 * sum(losses[:5]), (name, losses)


FEATSHARP_DEMO_B = ", adaptor: featsharp, upsampler_checkpoint: {path}, do_upsample: {upsample}"


def featsharp_for_demo_b(tmp_path, **kwargs) -> str:
    """A random-weight FeatSharp 2x checkpoint (released layout) for demo_b: 128 channels, 112 px, patch 14."""
    path = str(tmp_path / "featsharp_demo_b.pth")
    args = dict(embed_dim=128, patch_size=14, input_size=112, factor=2)
    write_featsharp_checkpoint(path, **{**args, **kwargs})
    return path


@pytest.mark.slow
@pytest.mark.parametrize("upsample, grid", [(True, 16), (False, 8)])
def test_a_featsharp_teacher_gets_the_upsampled_target_grid_and_trains(demo_assets, tmp_path, upsample, grid):
    results = str(tmp_path / "r")
    demo_b = FEATSHARP_DEMO_B.format(path=featsharp_for_demo_b(tmp_path), upsample=str(upsample).lower())
    teachers = three_teachers(demo_assets, sam_weights(tmp_path), demo_b=demo_b)
    cfg = load_run_config(QUICKSTART_SPEC, overrides(demo_assets, results, teachers, "train.max_steps=30"))
    plan = build_view_plan(cfg, resolve_teachers(cfg), student_patch=16)
    assert plan.sizes_for_step(0)["demo_b"] == (224 if upsample else 112)  # FeatSharp cuts its tiles from 2x
    assert target_grids(cfg)["demo_b"] == (grid, grid)

    run(cfg)
    losses = [r["loss/demo_b"] for r in metric_rows(results)]
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5]), losses
    with open(os.path.join(results, "teachers.json")) as f:
        record = {r["name"]: r for r in json.load(f)}["demo_b"]
    assert record["upsampler"]["file"].endswith("featsharp_demo_b.pth")
    assert record["upsampler"]["upsample_factor"] == (2 if upsample else 1)


@pytest.mark.parametrize(
    "wrong, expected",
    [
        ({"embed_dim": 96}, "96"),  # another teacher's width
        ({"input_size": 224}, "16"),  # trained for another grid
        ({"type": "featsharp.rope-qk"}, "rope-qk"),  # a variant we do not implement
    ],
)
def test_a_wrong_upsampler_file_is_refused_naming_it(demo_assets, tmp_path, capsys, wrong, expected):
    args = {k: v for k, v in wrong.items() if k != "type"}
    path = featsharp_for_demo_b(tmp_path, **args)
    if "type" in wrong:
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["upsample_args"]["type"] = wrong["type"]
        torch.save(checkpoint, path)
    demo_b = FEATSHARP_DEMO_B.format(path=path, upsample="true")
    teachers = three_teachers(demo_assets, sam_weights(tmp_path), demo_b=demo_b)
    args = ["distill", "-e", QUICKSTART_SPEC, *overrides(demo_assets, str(tmp_path / "r"), teachers)]
    assert radio_main(args) == 2
    err = capsys.readouterr().err
    assert "distill.teacher[1].upsampler_checkpoint" in err and path in err and expected in err, err[-2000:]
    assert "Traceback" not in err
    # --print-config runs the same check without building anything.
    assert radio_main([*args, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "# files: a run would stop here: distill.teacher[1].upsampler_checkpoint" in out and expected in out


@pytest.mark.slow
def test_resume_is_bit_identical_with_featsharp_mosaic_and_stochastic_resolutions(demo_assets, tmp_path):
    demo_b = FEATSHARP_DEMO_B.format(path=featsharp_for_demo_b(tmp_path), upsample="true")
    teachers = three_teachers(demo_assets, sam_weights(tmp_path), mosaic=2, demo_b=demo_b).replace(
        f"input_size: {SAM_INPUT},", f"input_size: {SAM_INPUT}, stochastic_resolutions: {{128: 0.5, 256: 0.5}},"
    )
    extra = (
        "train.max_steps=6",
        "train.keep_checkpoints=3",
        "distill.phi_s.refresh_every_n_steps=2",
        "dataset.augmentation.stochastic_resolutions={48: 0.5, 64: 0.5}",
        "train.grad_accumulation_steps=2",
    )
    full = str(tmp_path / "full")
    run(load_run_config(QUICKSTART_SPEC, overrides(demo_assets, full, teachers, *extra)))
    extra = (*extra, "train.checkpoint_interval_steps=3")
    source = str(tmp_path / "source")
    run(load_run_config(QUICKSTART_SPEC, overrides(demo_assets, source, teachers, *extra)))
    cut = str(tmp_path / "cut")
    shutil.copytree(source, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "step_0000006"))
    os.remove(os.path.join(cut, "student_final.safetensors"))
    result = run(load_run_config(QUICKSTART_SPEC, overrides(demo_assets, cut, teachers, *extra)))
    assert result.resumed_from.endswith("step_0000003")

    a = {r["step"]: r for r in metric_rows(full)}
    b = {r["step"]: r for r in metric_rows(cut)}
    for step in (4, 5, 6):
        for key in ("loss/total", "loss/demo_a", "loss/demo_b", "loss/sam"):
            assert a[step][key] == b[step][key], (step, key)
    # Both sizes really varied (a 2x2 mosaic's views are half its input), as each step's metrics row records.
    assert {r["size/sam"] for r in a.values()} == {64, 128} and {r["size/student"] for r in a.values()} == {48, 64}
    assert all(r["size/demo_b"] == 224 for r in a.values())  # FeatSharp 2x: twice the teacher's 112 px
    wa = load_file(os.path.join(full, "student_final.safetensors"))
    wb = load_file(os.path.join(cut, "student_final.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
