"""SIGTERM (SLURM pre-emption) mid-run: the step finishes, a checkpoint is written, the process exits 0."""

import os
import signal
import subprocess
import sys
import time

import pytest

from radio.engine.checkpoint import list_complete_checkpoints
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "radio"),
        "distill",
        "-e",
        QUICKSTART_SPEC,
        *tiny_run_overrides(
            demo_assets, results, "train.max_steps=100000", "train.num_epochs=1000", "train.checkpoint_interval=0"
        ),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    metrics = os.path.join(results, "metrics.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stop requested" in out
    (checkpoint,) = list_complete_checkpoints(results)
    step = int(os.path.basename(checkpoint).split("_")[1])
    assert 1 <= step < 100000
