"""What a finished run leaves in ``results_dir`` (names: ``radio/run/layout.py``): the trained backbone and
the report."""

import json
import os
from typing import Dict, List

import torch
from safetensors.torch import save_file

from radio.engine.report import write_report
from radio.run.layout import STUDENT_FINAL_FILE, STUDENT_FINAL_META
from radio.run.teachers import ResolvedTeacher


def write_final_outputs(
    cfg, student, student_state: Dict[str, torch.Tensor], teachers: List[ResolvedTeacher], results_dir: str
) -> None:
    """``student_final.safetensors`` (backbone only) + ``student_final.json`` and the loss/mixture plots.

    student_state: the trained module's consolidated fp32 ``student.*`` tensors (under ZeRO the module
    itself holds a bf16 working copy or a shard).
    """
    state = {k.removeprefix("student."): v.detach().cpu().contiguous().clone() for k, v in student_state.items()}
    tmp = os.path.join(results_dir, f".{STUDENT_FINAL_FILE}.tmp")
    save_file(state, tmp, metadata={"format": "radio-student", "type": cfg.model.backbone.type})
    os.replace(tmp, os.path.join(results_dir, STUDENT_FINAL_FILE))
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
    with open(os.path.join(results_dir, STUDENT_FINAL_META), "w") as f:
        json.dump(meta, f, indent=2)
    write_report(results_dir, [t.name for t in teachers])
