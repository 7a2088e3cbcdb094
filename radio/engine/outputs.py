"""What a run leaves in ``results_dir`` besides checkpoints and metrics."""

import json
import os
from typing import Dict, List, Optional

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from radio.config.resolve import ResolvedTeacher
from radio.engine.checkpoint import free_space
from radio.engine.report import write_report
from radio.errors import RadioError


def resolved_config_dict(cfg, teachers: List[ResolvedTeacher]) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    data["resolved_teachers"] = [t.as_dict() for t in teachers]
    return data


def write_resolved_config(cfg, teachers: List[ResolvedTeacher], results_dir: str) -> None:
    text = OmegaConf.to_yaml(OmegaConf.create(resolved_config_dict(cfg, teachers)))
    tmp = os.path.join(results_dir, ".config.yaml.tmp")
    try:
        os.makedirs(results_dir, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(results_dir, "config.yaml"))
    except OSError as exc:
        raise RadioError(
            f"cannot write {results_dir}/config.yaml: {exc.strerror} ({free_space(results_dir)})."
        ) from None


RUN_STATUS_FILE = "run_status.json"


def write_run_status(results_dir: str, status: str, step: int, detail: str = "") -> None:
    """``run_status.json``: how the run's last process ended — ``finished``, ``stopped`` (resumable: run the
    same command again) or ``failed`` — for job scripts, which cannot see a rank's exit status through
    ``accelerate launch``."""
    tmp = os.path.join(results_dir, ".run_status.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"status": status, "step": step, "detail": detail}, f)
    os.replace(tmp, os.path.join(results_dir, RUN_STATUS_FILE))


def read_run_status(results_dir: str, newer_than: float = 0.0) -> Optional[str]:
    """The ``status`` in ``run_status.json`` if it was written after ``newer_than`` (a time.time()), else None."""
    path = os.path.join(results_dir, RUN_STATUS_FILE)
    try:
        if os.path.getmtime(path) < newer_than:
            return None
        with open(path) as f:
            return json.load(f).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def write_final_outputs(
    cfg, student, student_state: Dict[str, torch.Tensor], teachers: List[ResolvedTeacher], results_dir: str
) -> None:
    """``student_final.safetensors`` (backbone only) + ``student_final.json`` and the loss/mixture plots.

    student_state: the trained module's consolidated fp32 ``student.*`` tensors (under ZeRO the module
    itself holds a bf16 working copy or a shard).
    """
    state = {k.removeprefix("student."): v.detach().cpu().contiguous().clone() for k, v in student_state.items()}
    tmp = os.path.join(results_dir, ".student_final.safetensors.tmp")
    save_file(state, tmp, metadata={"format": "radio-student", "type": cfg.model.backbone.type})
    os.replace(tmp, os.path.join(results_dir, "student_final.safetensors"))
    meta = {
        "type": cfg.model.backbone.type,
        "embed_dim": student.embed_dim,
        "patch_size": student.patch_size,
        "num_cls_tokens": student.num_cls_tokens,
        "img_size": cfg.dataset.img_size,
        "norm_mean": list(cfg.dataset.augmentation.norm_mean),
        "norm_std": list(cfg.dataset.augmentation.norm_std),
        "teachers": [
            {"name": t.name, "type": t.backbone_type, "mode": t.mode, "summary_token_idx": t.summary_token_idx}
            for t in teachers
        ],
    }
    with open(os.path.join(results_dir, "student_final.json"), "w") as f:
        json.dump(meta, f, indent=2)
    write_report(results_dir, [t.name for t in teachers])
