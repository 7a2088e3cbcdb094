"""DeepSpeed ZeRO-2/3 and DDP on two CPU ranks through the real launcher: a SIGKILL mid-run resumes
bit-identically, accumulation takes one engine step per radio step, ZeRO matches DDP, export matches
DeepSpeed's own zero_to_fp32."""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from radio.run.layout import list_complete_checkpoints
from tests.conftest import REPO, radio_cli, tiny_run_overrides
from tests.engine.launchers import ENGINES, launch, launch_command, launch_env

RUN = (
    "train.max_steps=8",
    "train.checkpoint_interval_steps=2",
    "train.keep_checkpoints=8",
    "train.grad_accumulation_steps=2",
    "distill.phi_s.refresh_every_n_steps=2",
    "train.precision=fp32",
)


def rows(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def uninterrupted(demo_assets, tmp_path_factory):
    """engine -> results_dir of an uninterrupted 8-step run (made once per engine)."""
    done = {}

    def get(engine):
        if engine not in done:
            results = str(tmp_path_factory.mktemp(engine) / "full")
            proc = launch(engine, tiny_run_overrides(demo_assets, results, *RUN))
            assert proc.returncode == 0, proc.stderr[-4000:]
            done[engine] = results
        return done[engine]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_mid_run_then_the_same_command_finishes_bit_identical(engine, uninterrupted, demo_assets, tmp_path):
    full = uninterrupted(engine)
    results = str(tmp_path / "killed")
    overrides = tiny_run_overrides(demo_assets, results, *RUN)
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            launch_command(engine, overrides),
            cwd=REPO,
            env=launch_env(),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.time() + 300
        while not list_complete_checkpoints(results):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        kill_tree(proc.pid)
        proc.wait()
    assert not os.path.exists(os.path.join(results, "student_final.safetensors")), "finished before the kill"

    again = launch(engine, overrides)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed from" in again.stdout + again.stderr
    resumed, reference = rows(results), rows(full)
    assert [r["step"] for r in resumed] == list(range(1, 9))  # every step logged once
    for a, b in zip(resumed, reference):
        for key in ("loss/total", "loss/demo_a", "loss/demo_b", "lr"):
            assert a[key] == b[key], (a["step"], key)
    a = load_file(os.path.join(results, "student_final.safetensors"))
    b = load_file(os.path.join(full, "student_final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it at once, as a scheduler ending a job does (the ranks
    run in sessions of their own, so the launcher's process group alone would miss them)."""
    launcher = psutil.Process(pid)
    for process in [launcher, *launcher.children(recursive=True)]:
        process.send_signal(signal.SIGKILL)


def engine_state(results: str) -> dict:
    """DeepSpeed's own record of the newest checkpoint (its counters)."""
    folder = os.path.join(list_complete_checkpoints(results)[-1], "deepspeed")
    name = next(n for n in sorted(os.listdir(folder)) if n.endswith("model_states.pt"))
    return torch.load(os.path.join(folder, name), map_location="cpu", weights_only=False)  # our own test file


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_accumulation_takes_one_engine_step_per_radio_step_and_matches_ddp(engine, uninterrupted):
    zero, ddp = uninterrupted(engine), uninterrupted("ddp")
    state = engine_state(zero)
    assert state["global_steps"] == 8 and state["skipped_steps"] == 0  # 8 radio steps x 2 micro-batches
    for a, b in zip(rows(zero), rows(ddp)):
        assert a["loss/total"] == pytest.approx(b["loss/total"], rel=1e-5), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
    a = load_file(os.path.join(zero, "student_final.safetensors"))
    b = load_file(os.path.join(ddp, "student_final.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_export_of_a_zero_run_matches_zero_to_fp32(engine, uninterrupted, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    results = uninterrupted(engine)
    newest = list_complete_checkpoints(results)[-1]
    reference = get_fp32_state_dict_from_zero_checkpoint(newest, tag="deepspeed")
    ours = load_file(os.path.join(newest, "model.safetensors"))
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k].float()) for k in ours)
    final = load_file(os.path.join(results, "student_final.safetensors"))
    assert all(torch.equal(v, reference[f"student.{k}"].float()) for k, v in final.items())

    proc = radio_cli("export", "--results", results, "--out", str(tmp_path / "export"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    backbone = load_file(str(tmp_path / "export" / "backbone.safetensors"))
    same_names = [k for k in backbone if f"student.{k}" in reference]  # the blocks keep their timm names
    assert any(".attn.qkv." in k for k in same_names)
    assert all(torch.equal(backbone[k], reference[f"student.{k}"].float()) for k in same_names)
