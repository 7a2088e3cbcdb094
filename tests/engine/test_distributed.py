"""Two CPU ranks over gloo through `accelerate launch`: the same loop, per-rank loader state, resume."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
BIN = os.path.dirname(sys.executable)


def launch_two_ranks(overrides, cwd, port):
    # `--cpu --num_processes 2` silently starts one process; `--multi_gpu` + Accelerator(cpu=True) starts two.
    cmd = [
        os.path.join(BIN, "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        os.path.join(REPO, "radio", "train.py"), "--spec", QUICKSTART_SPEC, *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_two_rank_ddp_run_checkpoints_every_rank_and_resumes(demo_assets, tmp_path):
    results = str(tmp_path / "ddp")
    first = launch_two_ranks(tiny_run_overrides(demo_assets, results, "train.max_steps=2"), str(tmp_path), 29541)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = os.path.join(results, "checkpoints", "step_0000002")
    assert {"loader_rank0.json", "loader_rank1.json", "rng_rank0.pt", "rng_rank1.pt"} <= set(os.listdir(ckpt))
    with open(os.path.join(results, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    # Two ranks x batch 4 x 2 steps: the logged counters sum both ranks' readers.
    assert rows[-1]["data/read/samples"] >= 16

    second = launch_two_ranks(tiny_run_overrides(demo_assets, results, "train.max_steps=3"), str(tmp_path), 29542)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    with open(os.path.join(results, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [1, 2, 3]


@pytest.mark.slow
def test_radio_distill_with_two_gpus_starts_two_ranks(demo_assets, tmp_path):
    results = str(tmp_path / "two")
    cmd = [os.path.join(BIN, "radio"), "distill", "-e", QUICKSTART_SPEC,
           *tiny_run_overrides(demo_assets, results, "train.max_steps=1", "train.num_gpus=2")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching:" in proc.stdout
    assert {"loader_rank0.json", "loader_rank1.json"} <= set(os.listdir(os.path.join(results, "checkpoints", "step_0000001")))
