"""tools/slurm/radio_distill.sbatch, run as two simulated nodes on this machine (srun and scontrol replaced
by stand-ins): both nodes' launchers rendezvous, a time-limit signal to the batch shell makes both write
their part of one checkpoint, the job requeues itself, and the requeued job finishes bit-identical to an
uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from radio.run.layout import list_complete_checkpoints
from tests.conftest import REPO, tiny_run_overrides
from tests.engine.launchers import free_port, launch_env

SBATCH = os.path.join(REPO, "tools", "slurm", "radio_distill.sbatch")
QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
FAKE_SRUN = """#!/bin/bash
# srun on one machine: the command once per node, SLURM_NODEID set as SLURM sets it. Node 0 starts first and
# hosts the rendezvous store (on real nodes only the first host's address matches, here all do).
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" & pids+=($!)
  for ((try = 0; node == 0 && try < 600; try++)); do
    (exec 3<>/dev/tcp/127.0.0.1/$MASTER_PORT) 2>/dev/null && break
    sleep 0.1
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1 $2" in
  "show hostnames") echo 127.0.0.1 ;;
  *) echo "$@" >> "$SCONTROL_LOG" ;;
esac
"""


@pytest.fixture
def cluster(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)

    def job(results, *extra, job_id="4242"):
        overrides = tiny_run_overrides(os.environ["RADIO_DEMO"], results, *extra)
        env = launch_env(
            RADIO_SRUN=str(bin_dir / "srun"),
            RADIO_SCONTROL=str(bin_dir / "scontrol"),
            SCONTROL_LOG=str(tmp_path / "scontrol.log"),
            SLURM_JOB_ID=job_id,
            SLURM_JOB_NODELIST="node[0-1]",
            SLURM_NNODES="2",
            SLURM_SUBMIT_DIR=REPO,
            GPUS_PER_NODE="1",
            MASTER_PORT=str(free_port()),
            ACCELERATE_CONFIG="accelerate_configs/multi_gpu.yaml",
            RADIO_ENV=os.path.join(sys.prefix, "bin", "activate"),
        )
        log = open(tmp_path / f"job-{len(os.listdir(tmp_path))}.out", "w")
        return subprocess.Popen(
            ["bash", SBATCH, QUICKSTART_SPEC, *overrides], cwd=REPO, env=env, stdout=log, stderr=log
        ), log.name

    return job


RUN = ("train.max_steps=16", "train.precision=fp32", "distill.phi_s.refresh_every_n_steps=2")


def rows(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


@pytest.mark.slow
def test_two_nodes_preempted_by_the_time_limit_requeue_and_resume_bit_identically(
    cluster, demo_assets, tmp_path, monkeypatch
):
    monkeypatch.setenv("RADIO_DEMO", demo_assets)
    full = str(tmp_path / "full")
    job, log = cluster(full, *RUN)
    assert job.wait(timeout=300) == 0, open(log).read()[-4000:]

    results = str(tmp_path / "preempted")
    job, log = cluster(results, *RUN)
    deadline = time.time() + 300
    while not (os.path.exists(os.path.join(results, "metrics.jsonl")) and len(rows(results)) >= 2):
        assert job.poll() is None and time.time() < deadline, open(log).read()[-4000:]
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@180 sends the batch shell
    assert job.wait(timeout=300) == 0, open(log).read()[-4000:]
    out = open(log).read()
    assert "time-limit signal: asking the run to checkpoint" in out and "run ended: stopped" in out
    assert open(tmp_path / "scontrol.log").read().split() == ["requeue", "4242"]
    (checkpoint,) = list_complete_checkpoints(results)
    assert {"loader_rank0.json", "loader_rank1.json", "rng_rank0.pt", "rng_rank1.pt"} <= set(os.listdir(checkpoint))
    assert not os.path.exists(os.path.join(results, "student_final.safetensors"))

    job, log = cluster(results, *RUN)  # the requeued job: same script, same arguments
    assert job.wait(timeout=300) == 0, open(log).read()[-4000:]
    assert "resumed from" in open(log).read()
    a, b = rows(results), rows(full)
    assert sorted(a) == sorted(b) and all(a[s]["loss/total"] == b[s]["loss/total"] for s in a)
    x = load_file(os.path.join(results, "student_final.safetensors"))
    y = load_file(os.path.join(full, "student_final.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)
