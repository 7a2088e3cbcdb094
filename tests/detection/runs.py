"""Tiny ``task: detection`` runs for the end-to-end tests: a synthetic COCO set, a tiny saved teacher, a spec
file, and the ``radio`` CLI in a subprocess.

Everything is the size that trains a step in a fraction of a second on one CPU thread: 64px images, timm's
``test_convnext`` backbone (strides 8/16/32, widths 32/48/64), hidden_dim 32, 10 queries, 4 denoising queries,
1 encoder and 2 decoder layers.
"""

import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional

import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO

RADIO = os.path.join(os.path.dirname(sys.executable), "radio")
HOLD_ENV = "RADIO_TEST_HOLD_BEFORE_STEP"  # read by this module run as a script (hold_command)
NUM_CLASSES = 3
SIZE = 64  # pixels, train and eval


def tiny_detector(**changes) -> dict:
    """A ``DetectorConfig`` section (``radio/detection/schema.py``) of a tiny RT-DETR."""
    section = {
        "family": "rtdetr",
        "backbone": "test_convnext",
        "out_indices": [1, 2, 3],
        "hidden_dim": 32,
        "num_queries": 10,
        "num_denoising": 4,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "ffn_dim": 64,
        "attention_heads": 2,
    }
    section.update(changes)
    return section


def write_coco(root: str, train: int = 8, val: int = 4, seed: int = 0) -> Dict[str, dict]:
    """A 3-class synthetic COCO set of 64-96 px images: {split: {image_dir, json_file}}."""
    from radio.data.coco_synthetic import write_synthetic_coco

    return write_synthetic_coco(root, {"train": train, "val": val}, seed=seed, size_range=(64, 96))


def write_teacher(folder: str, *, seed: int = 1, perturb: float = 0.0, **changes) -> str:
    """A tiny random-weight teacher saved as a transformers folder (``export_detector``); ``perturb`` adds
    Gaussian noise of that scale to every parameter (not the norms' running statistics), so its features are
    far from any fresh student's."""
    from radio.detection.models import build_detector, export_detector
    from radio.detection.schema import DetectorConfig

    torch.manual_seed(seed)
    model = build_detector(DetectorConfig(**tiny_detector(**changes)), NUM_CLASSES, where="distill.teacher")
    if perturb:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * perturb)
    export_detector(model, folder)
    return folder


def detection_spec(results_dir: str, coco: Dict[str, dict], teacher: Optional[str] = None, **sections) -> dict:
    """A tiny detection spec as a dict; ``sections`` replace (``model=...``) or extend (``train={...}`` is merged)
    the defaults. With ``teacher`` (a saved folder), a tiny RT-DETR teacher section points at it."""
    spec = {
        "task": "detection",
        "results_dir": results_dir,
        "model": tiny_detector(),
        "dataset": {
            "train_data_sources": [coco["train"]],
            "val_data_sources": [coco["val"]],
            "num_classes": NUM_CLASSES,
            "batch_size": 2,
            "workers": 0,
            "augmentation": {"train_spatial_size": [SIZE, SIZE], "eval_spatial_size": [SIZE, SIZE]},
        },
        "train": {
            "max_steps": 4,
            "num_epochs": 100,
            "precision": "fp32",
            "seed": 0,
            "log_every_n_steps": 1,
            "torch_threads": 1,
            "checkpoint_interval": None,
            "validation_interval": None,
            "optim": {"lr": 0.001, "warmup_steps": 0},
        },
        "distill": {},
        "logging": {"progress_bar": False},
    }
    if teacher is not None:
        spec["distill"] = {"teacher": tiny_detector(), "pretrained_teacher_model_path": teacher}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(name), dict):
            spec[name] = {**spec[name], **value}
        else:
            spec[name] = value
    return spec


def write_spec(path: str, spec: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    return path


def radio_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def radio(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed ``radio`` console script, offline, from the repository root."""
    return subprocess.run([RADIO, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=radio_env())


def start(command: list, log_path: str, **env: str) -> subprocess.Popen:
    """``command`` in its own process group (so a kill reaches all of it), output to ``log_path``."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**radio_env(), **env}, start_new_session=True
        )


def wait_for(predicate, proc: subprocess.Popen, log_path: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, open(log_path).read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def checkpoint_dir(results_dir: str, step: int) -> str:
    return os.path.join(results_dir, "checkpoints", f"step_{step:07d}")


def metrics_rows(results_dir: str) -> list:
    with open(os.path.join(results_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def checkpoint_tensors(results_dir: str, step: int) -> Dict[str, torch.Tensor]:
    return load_file(os.path.join(checkpoint_dir(results_dir, step), "model.safetensors"))


def student_state(results_dir: str, step: int) -> Dict[str, torch.Tensor]:
    """The student detector's tensors in a checkpoint (the ``DetectionDistiller``'s ``student.`` entries)."""
    return {
        k.removeprefix("student."): v
        for k, v in checkpoint_tensors(results_dir, step).items()
        if k.startswith("student.")
    }


def hold_command(*args: str) -> list:
    """``radio ARGS`` through this module: with ``RADIO_TEST_HOLD_BEFORE_STEP=N`` in its environment the run
    blocks before optimizer step N (steps 1..N-1 trained, logged and checkpointed as due), so a test can kill
    it there, mid-run, without racing a run that takes a tenth of a second per step."""
    return [sys.executable, "-m", "tests.detection.runs", *args]


def _install_hold(before_step: int) -> None:
    from radio.detection.task import DetectionTrainer

    train_step = DetectionTrainer.step

    def step(self, data):
        if self.state.counters.step == before_step - 1:
            time.sleep(3600)  # until the test kills the process group
        return train_step(self, data)

    DetectionTrainer.step = step


if __name__ == "__main__":
    from radio.cli import main

    if os.environ.get(HOLD_ENV):
        _install_hold(int(os.environ[HOLD_ENV]))
    sys.exit(main(sys.argv[1:]))
