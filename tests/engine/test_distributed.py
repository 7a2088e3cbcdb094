"""Two CPU ranks over gloo through `accelerate launch`: the same loop, per-rank loader state, resume."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, tiny_run_overrides
from tests.engine.launchers import launch

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
BIN = os.path.dirname(sys.executable)


@pytest.mark.slow
def test_two_rank_ddp_resume_continues_exactly(demo_assets, tmp_path):
    extra = (
        "train.max_steps=4",
        "train.checkpoint_interval_steps=2",
        "train.keep_checkpoints=3",
        "dataset.workers=1",
        "distill.phi_s.refresh_every_n_steps=2",
    )
    full = str(tmp_path / "full")
    first = launch("ddp", tiny_run_overrides(demo_assets, full, *extra))
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = os.path.join(full, "checkpoints", "step_0000002")
    assert {"loader_rank0.json", "loader_rank1.json", "rng_rank0.pt", "rng_rank1.pt"} <= set(os.listdir(ckpt))
    rows = metrics(full)
    # Two ranks x batch 4 x 4 steps: the logged counters sum both ranks' readers.
    assert rows[4]["data/read/samples"] >= 32

    # Killed right after the step-2 checkpoint, then restarted: both ranks continue where they were.
    cut = str(tmp_path / "cut")
    shutil.copytree(full, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "step_0000004"))
    os.remove(os.path.join(cut, "student_final.safetensors"))
    second = launch("ddp", tiny_run_overrides(demo_assets, cut, *extra))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    resumed = metrics(cut)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step]["loss/total"] == rows[step]["loss/total"]
    a = load_file(os.path.join(full, "student_final.safetensors"))
    b = load_file(os.path.join(cut, "student_final.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def metrics(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return {row["step"]: row for row in map(json.loads, f)}


@pytest.mark.slow
def test_radio_distill_with_two_gpus_starts_two_ranks(demo_assets, tmp_path):
    results = str(tmp_path / "two")
    cmd = [
        os.path.join(BIN, "radio"),
        "distill",
        "-e",
        QUICKSTART_SPEC,
        *tiny_run_overrides(demo_assets, results, "train.max_steps=1", "train.num_gpus=2"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching:" in proc.stdout
    assert {"loader_rank0.json", "loader_rank1.json"} <= set(
        os.listdir(os.path.join(results, "checkpoints", "step_0000001"))
    )
