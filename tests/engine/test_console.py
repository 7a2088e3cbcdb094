"""What a run says on the console: the plain progress line (no progress bar) and the warning for an
`accelerate launch --cpu --num_processes N` that starts one process."""

import subprocess

import pytest

from radio.engine.accel import single_process_cpu_launch_note
from radio.engine.console import PlainProgressLog
from tests.conftest import tiny_run_overrides
from tests.engine.launchers import cpu_launch_command, launch_env


def test_the_plain_line_says_step_losses_speed_lr_and_eta():
    now = [100.0]
    log = PlainProgressLog(total_steps=100, start_step=20, teacher_names=["dino", "clip"], clock=lambda: now[0])
    now[0] += 30.0  # 30 s for steps 21..30: 3 s a step, 70 steps to go
    values = {"loss/total": 1.23456, "loss/dino": 0.5, "loss/clip": 0.73456, "images_per_s": 12.34, "lr": 1e-3}
    assert log.line(30, values) == (
        "step 30/100 (30%) | loss 1.2346 (dino 0.5, clip 0.7346) | 12.3 img/s | lr 0.001 | ETA 3m30s"
    )


def test_a_window_of_skipped_steps_says_so_and_no_eta_before_a_step():
    log = PlainProgressLog(total_steps=10, start_step=0, teacher_names=["t"], clock=lambda: 0.0)
    line = log.line(0, {"lr": 0.1})
    assert "every step of the window was skipped" in line and "ETA" not in line


LAUNCHED_CPU = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    "environ, launcher, warned",
    [
        (LAUNCHED_CPU, ["accelerate", "launch", "--cpu", "--num_processes", "2", "radio/train.py"], True),
        (LAUNCHED_CPU, ["python", "-m", "accelerate.commands.launch", "--cpu", "--num-processes=4", "t.py"], True),
        (LAUNCHED_CPU, ["accelerate", "launch", "--cpu", "--num_processes", "1", "radio/train.py"], False),
        ({**LAUNCHED_CPU, "WORLD_SIZE": "2"}, ["accelerate", "launch", "--num_processes", "2", "t.py"], False),
        ({}, ["accelerate", "launch", "--num_processes", "2", "t.py"], False),  # not launched with --cpu
        (LAUNCHED_CPU, ["accelerate", "launch", "--cpu", "t.py", "--num_processes", "2"], False),  # script's own
    ],
)
def test_a_cpu_launch_of_several_processes_that_started_one_is_said(environ, launcher, warned):
    note = single_process_cpu_launch_note(environ, launcher)
    assert (note is not None) == warned
    if warned:
        assert "started ONE process" in note and "--multi_gpu --num_processes" in note and "train.num_gpus=" in note


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_warns(demo_assets, tmp_path):
    cmd = cpu_launch_command(2, tiny_run_overrides(demo_assets, str(tmp_path / "r"), "train.max_steps=1"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=launch_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "`accelerate launch --cpu --num_processes 2` started ONE process" in proc.stdout
