"""Non-finite losses skip the optimizer step (agreed by all ranks); too many in a row stop the run."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from radio.engine.loop import run
from radio.errors import RadioError
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_nonfinite_steps_are_skipped_then_the_run_stops(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    cfg = load_run_config(
        QUICKSTART_SPEC,
        tiny_run_overrides(
            demo_assets,
            results,
            "train.max_steps=20",
            "train.optim.lr=1e30",
            "train.optim.warmup_steps=0",
            "train.clip_grad_norm=0",
            "train.max_consecutive_nonfinite=3",
            "train.checkpoint_interval_steps=1",
            "train.keep_checkpoints=20",
        ),
    )
    with pytest.raises(RadioError, match="non-finite for 3 optimizer steps in a row"):
        run(cfg)
    with open(os.path.join(results, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    skipped = [r for r in rows if r["nonfinite_skipped_total"] > 0]
    assert skipped and skipped[-1]["nonfinite_skipped_total"] == 2  # the third one stops the run
    # Skipped steps leave the weights alone: the two checkpoints after the first skip hold the same student.
    first = skipped[0]["step"]
    a = load_file(os.path.join(results, "checkpoints", f"step_{first - 1:07d}", "model.safetensors"))
    b = load_file(os.path.join(results, "checkpoints", f"step_{first + 1:07d}", "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def faults(accum: int) -> str:
    """Micro-batch indices (from 0) of: a NaN loss on rank 1 in step 2's first micro-batch; NaN gradients
    (finite loss) on rank 0 in step 4's last; then NaN losses in steps 6, 7 and 8, on alternating ranks."""

    def micro(step, index):
        return (step - 1) * accum + index

    last = accum - 1
    return ",".join(
        [
            f"nan_loss@1:{micro(2, 0)}",
            f"nan_grad@0:{micro(4, last)}",
            f"nan_loss@0:{micro(6, last)}",
            f"nan_loss@1:{micro(7, 0)}",
            f"nan_loss@0:{micro(8, 0)}",
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine,accum", [("ddp", 1), ("ddp", 2), ("zero2", 1), ("zero2", 2), ("zero3", 2)])
def test_one_ranks_nonfinite_loss_or_gradients_skip_the_step_everywhere(engine, accum, demo_assets, tmp_path):
    from tests.engine.launchers import launch

    results = str(tmp_path / "run")
    overrides = tiny_run_overrides(
        demo_assets,
        results,
        "train.max_steps=10",
        f"train.grad_accumulation_steps={accum}",
        "train.precision=fp32",
        "train.max_consecutive_nonfinite=3",
        "train.checkpoint_interval_steps=1",
        "train.keep_checkpoints=10",
    )
    script = os.path.join(os.path.dirname(__file__), "fault_injection.py")
    proc = launch(engine, overrides, script=script, RADIO_TEST_FAULTS=faults(accum))
    assert proc.returncode != 0
    assert "non-finite for 3 optimizer steps in a row (the last at step 8)" in proc.stderr, proc.stderr[-4000:]
    with open(os.path.join(results, "metrics.jsonl")) as f:
        skipped = {r["step"]: r["nonfinite_skipped_total"] for r in map(json.loads, f)}
    assert skipped == {1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 4}

    def weights(step):
        return load_file(os.path.join(results, "checkpoints", f"step_{step:07d}", "model.safetensors"))

    for before, skipped_step in ((1, 2), (3, 4)):
        a, b = weights(before), weights(skipped_step)
        assert all(torch.equal(a[k], b[k]) for k in a), f"step {skipped_step} changed the weights"
    a, b = weights(2), weights(3)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # a normal step does


def nan_weights(source: str, target: str) -> str:
    state = load_file(source)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, target)
    return target


@pytest.mark.slow
def test_a_teacher_with_nan_weights_is_left_out_and_counted(demo_assets, tmp_path):
    from radio.quickstart import demo_weights_path

    bad = nan_weights(demo_weights_path(demo_assets, "demo_vit_tiny_patch14"), str(tmp_path / "nan_b.safetensors"))
    results = str(tmp_path / "one")
    extra = ("train.max_steps=3", f"distill.teacher.1.pretrained_teacher_model_path={bad}")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, *extra)))
    with open(os.path.join(results, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert all(r["loss_terms_skipped"] == 1 and r["nonfinite_skipped_total"] == 0 for r in rows)  # demo_a trains
    stats = load_file(os.path.join(results, "checkpoints", "step_0000003", "normalizers.safetensors"))
    assert all(torch.isfinite(v).all() for v in stats.values())  # the statistics never saw the NaN features


@pytest.mark.slow
def test_when_every_teacher_is_nan_the_streak_stops_the_run_naming_them(demo_assets, tmp_path):
    from radio.quickstart import demo_weights_path

    paths = [
        nan_weights(demo_weights_path(demo_assets, name), str(tmp_path / f"nan_{i}.safetensors"))
        for i, name in enumerate(("demo_vit_tiny_patch16", "demo_vit_tiny_patch14"))
    ]
    extra = [f"distill.teacher.{i}.pretrained_teacher_model_path={p}" for i, p in enumerate(paths)]
    cfg = load_run_config(
        QUICKSTART_SPEC,
        tiny_run_overrides(demo_assets, str(tmp_path / "all"), "train.max_consecutive_nonfinite=2", *extra),
    )
    with pytest.raises(RadioError, match="non-finite for 2 optimizer steps in a row .*teacher\\(s\\) demo_a, demo_b"):
        run(cfg)
