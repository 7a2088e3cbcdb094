"""The step-throughput benchmark runs end to end on the tiny preset and ends with its JSON summary (no
timings are asserted: those belong to docs/benchmarks.md)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_tiny_preset_prints_every_variant_and_phase(tmp_path):
    script = os.path.join(REPO, "tools", "bench", "step_throughput.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    args = [
        sys.executable,
        script,
        "--preset",
        "tiny",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--workers",
        "0",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["img_s"]) == {"bare", "models", "engine", "pipeline"} and all(
        v > 0 for v in summary["img_s"].values()
    )
    assert summary["engine_over_bare"] == pytest.approx(summary["img_s"]["engine"] / summary["img_s"]["bare"])
    engine = summary["phases_ms"]["engine"]
    for phase in ("data_wait", "h2d", "teacher/demo_a", "teacher/demo_b", "normalizers", "student_forward_backward"):
        assert phase in engine, engine
    assert "normalizers" in summary["phases_ms"]["bare"]  # the bare loop does the objective's work too
    assert "normalizers" not in summary["phases_ms"]["models"]  # ... which the models-only loop leaves out
    assert summary["engine_over_models"] == pytest.approx(summary["img_s"]["engine"] / summary["img_s"]["models"])
