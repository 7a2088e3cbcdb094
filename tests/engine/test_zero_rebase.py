"""PHI-S re-basing under ZeRO-2/3 on two CPU ranks: master and working copy both re-based, exp_avg mapped."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.engine.launchers import free_port, launch_env


@pytest.mark.slow
def test_rebasing_reaches_the_next_forward_and_survives_the_next_step_under_zero():
    worker = os.path.join(os.path.dirname(__file__), "zero_rebase_worker.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        worker,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=launch_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for stage in (2, 3):
        for rank in (0, 1):
            assert f"rank {rank}: ZeRO-{stage} re-basing ok" in proc.stdout
