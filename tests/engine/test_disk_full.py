"""A disk that fills up mid-run (results_dir on a small tmpfs; needs root, skipped otherwise): one message
naming results_dir and the free space, exit 2, the previous checkpoint intact; once there is space again the
same command finishes bit-identical to an uninterrupted run."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
RADIO = os.path.join(os.path.dirname(sys.executable), "radio")
RUN = ("train.max_steps=8", "train.checkpoint_interval_steps=1", "train.keep_checkpoints=2")


def distill(demo_assets, results):
    cmd = [RADIO, "distill", "-e", QUICKSTART_SPEC, *tiny_run_overrides(demo_assets, results, *RUN)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")

    def resize(kib):
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mount)], check=True)

    yield mount, resize
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_with_one_message_and_the_run_resumes_once_there_is_space(demo_assets, tmp_path, small_disk):
    full = str(tmp_path / "full")
    assert distill(demo_assets, full).returncode == 0
    checkpoint = os.path.join(full, "checkpoints", "step_0000008")
    size = sum(os.path.getsize(os.path.join(checkpoint, n)) for n in os.listdir(checkpoint))
    mount, resize = small_disk
    resize(int(2.6 * size / 1024) + 128)  # two checkpoints fit, the third one (written before pruning) does not

    results = str(mount / "run")
    proc = distill(demo_assets, results)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "could not write checkpoint" in proc.stderr and "MiB free there" in proc.stderr
    kept = sorted(n for n in os.listdir(os.path.join(results, "checkpoints")) if not n.startswith("."))
    assert kept and all(os.path.isfile(os.path.join(results, "checkpoints", n, "trainer_state.json")) for n in kept)

    still_full = distill(demo_assets, results)  # restarted before any space was freed
    assert still_full.returncode == 2 and "Traceback" not in still_full.stderr, still_full.stderr[-3000:]
    assert "space" in still_full.stderr

    resize(int(20 * size / 1024))
    again = distill(demo_assets, results)
    assert again.returncode == 0, again.stderr[-3000:]
    with open(os.path.join(results, "metrics.jsonl")) as f, open(os.path.join(full, "metrics.jsonl")) as g:
        a = {r["step"]: r["loss/total"] for r in map(json.loads, f)}
        b = {r["step"]: r["loss/total"] for r in map(json.loads, g)}
    assert a == b
    x = load_file(os.path.join(results, "student_final.safetensors"))
    y = load_file(os.path.join(full, "student_final.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in y)
