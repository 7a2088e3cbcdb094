"""Stopping a run so that it continues: SIGTERM to the whole process group (DataLoader workers too),
during start-up, a STOP file, the launcher killed by a signal it does not forward. Each writes a checkpoint
(or loses nothing), exits 75 ("stopped, resumable", distinct from 0 "finished"), records it in
run_status.json, and the same command then finishes bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from radio.engine.stop import EXIT_STOPPED
from radio.run.layout import list_complete_checkpoints
from tests.conftest import REPO, tiny_run_overrides
from tests.engine.launchers import launch_command, launch_env

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
RADIO = os.path.join(os.path.dirname(sys.executable), "radio")
RUN = ("train.max_steps=20", "dataset.workers=1")


def distill_command(demo_assets, results, *extra):
    return [RADIO, "distill", "-e", QUICKSTART_SPEC, *tiny_run_overrides(demo_assets, results, *RUN, *extra)]


def start(cmd, log_path, **env):
    log = open(log_path, "w")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=launch_env(**env), start_new_session=True
    )


def wait_for(predicate, proc, log_path, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, open(log_path).read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def metrics_logged(results, at_least=1):
    def check():
        path = os.path.join(results, "metrics.jsonl")
        return os.path.exists(path) and sum(1 for _ in open(path)) >= at_least

    return check


def status(results):
    with open(os.path.join(results, "run_status.json")) as f:
        return json.load(f)


def rows(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def uninterrupted(demo_assets, tmp_path_factory):
    results = str(tmp_path_factory.mktemp("preempt") / "full")
    proc = subprocess.run(distill_command(demo_assets, results), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert status(results)["status"] == "finished"
    return results


def assert_resumes_identically(demo_assets, results, reference):
    again = subprocess.run(distill_command(demo_assets, results), capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert status(results)["status"] == "finished"
    a, b = rows(results), rows(reference)
    assert sorted(a) == sorted(b)
    assert all(a[s]["loss/total"] == b[s]["loss/total"] for s in a)
    x = load_file(os.path.join(results, "student_final.safetensors"))
    y = load_file(os.path.join(reference, "student_final.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_checkpoints_and_resumes(demo_assets, tmp_path, uninterrupted):
    results, log = str(tmp_path / "run"), str(tmp_path / "log")
    proc = start(distill_command(demo_assets, results), log)
    wait_for(metrics_logged(results, 2), proc, log)
    os.killpg(proc.pid, signal.SIGTERM)  # what SLURM and torchrun do: every process, DataLoader workers too
    assert proc.wait(timeout=300) == EXIT_STOPPED, open(log).read()[-3000:]
    out = open(log).read()
    assert "stop requested (SIGTERM): checkpoint written" in out and "Traceback" not in out
    (checkpoint,) = list_complete_checkpoints(results)
    assert status(results)["status"] == "stopped"
    assert 2 <= int(os.path.basename(checkpoint).split("_")[1]) < 20
    assert_resumes_identically(demo_assets, results, uninterrupted)


@pytest.mark.slow
def test_a_stop_during_start_up_is_kept_and_loses_nothing(demo_assets, tmp_path):
    results, log = str(tmp_path / "run"), str(tmp_path / "log")
    proc = start(distill_command(demo_assets, results), log)
    wait_for(lambda: os.path.exists(os.path.join(results, ".lock")), proc, log)  # about to build the models
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) == EXIT_STOPPED, open(log).read()[-3000:]
    assert "nothing trained since the last checkpoint at step 0" in open(log).read()
    assert status(results)["status"] == "stopped"


@pytest.mark.slow
def test_a_stop_file_checkpoints_and_is_consumed(demo_assets, tmp_path, uninterrupted):
    results, log = str(tmp_path / "run"), str(tmp_path / "log")
    proc = start(distill_command(demo_assets, results), log)
    wait_for(metrics_logged(results, 2), proc, log)
    open(os.path.join(results, "STOP"), "w").close()
    assert proc.wait(timeout=300) == EXIT_STOPPED, open(log).read()[-3000:]
    assert "stop requested (STOP file): checkpoint written" in open(log).read()
    assert not os.path.exists(os.path.join(results, "STOP"))
    assert_resumes_identically(demo_assets, results, uninterrupted)


@pytest.mark.slow
def test_ranks_orphaned_by_a_killed_launcher_checkpoint_and_stop(demo_assets, tmp_path):
    results, log = str(tmp_path / "run"), str(tmp_path / "log")
    overrides = tiny_run_overrides(demo_assets, results, "train.max_steps=100000", "train.num_epochs=1000")
    proc = start(launch_command("ddp", overrides), log)
    wait_for(metrics_logged(results, 2), proc, log)
    proc.send_signal(signal.SIGUSR1)  # the launcher does not forward SIGUSR1: it dies, its ranks live on
    proc.wait(timeout=60)
    deadline = time.time() + 300
    while not (os.path.exists(os.path.join(results, "run_status.json")) and status(results)["status"] == "stopped"):
        assert time.time() < deadline, open(log).read()[-3000:]
        time.sleep(0.1)
    assert status(results)["detail"] == "the launcher exited"
    assert list_complete_checkpoints(results)
