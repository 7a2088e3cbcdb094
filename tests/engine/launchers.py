"""Two CPU ranks through the real `accelerate launch`, under DDP or the shipped DeepSpeed configs."""

import os
import socket
import subprocess
import sys

from tests.conftest import REPO

BIN = os.path.dirname(sys.executable)
QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
TRAIN_PY = os.path.join(REPO, "radio", "train.py")
ENGINES = ("ddp", "zero2", "zero3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(engine: str, overrides, script: str = TRAIN_PY, spec: str = QUICKSTART_SPEC) -> list:
    if engine == "ddp":
        # `--cpu --num_processes 2` silently starts one process; `--multi_gpu` + Accelerator(cpu=True) starts two.
        how = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:  # the shipped files, exactly as a user launches them
        how = ["--config_file", os.path.join("accelerate_configs", f"deepspeed_{engine}.yaml")]
    return [
        os.path.join(BIN, "accelerate"),
        "launch",
        *how,
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        script,
        "--spec",
        spec,
        *overrides,
    ]


def cpu_launch_command(num_processes: int, overrides) -> list:
    """``accelerate launch --cpu --num_processes N radio/train.py`` (Accelerate starts ONE process whatever N)."""
    return [
        os.path.join(BIN, "accelerate"),
        "launch",
        "--cpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        TRAIN_PY,
        "--spec",
        QUICKSTART_SPEC,
        *overrides,
    ]


def launch_env(**extra) -> dict:
    # DeepSpeed's JIT ops (shm comm) compile once into the default torch extensions cache.
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **extra}


def launch(
    engine: str, overrides, script: str = TRAIN_PY, spec: str = QUICKSTART_SPEC, **env
) -> subprocess.CompletedProcess:
    # From the repository root: the DeepSpeed YAMLs name their JSON relative to it.
    return subprocess.run(
        launch_command(engine, overrides, script, spec),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=launch_env(**env),
    )
