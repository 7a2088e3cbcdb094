"""What a finished run leaves in ``results_dir`` (names: ``radio/run/layout.py``): the trained backbone (with a
classification run's classifier) and the report."""

import json
import os
from typing import Dict, List

import torch
from safetensors.torch import save_file

from radio.engine.report import write_report
from radio.run.layout import STUDENT_FINAL_FILE, STUDENT_FINAL_META
from radio.run.teachers import ResolvedTeacher

# Trained-module prefixes that ``student_final.safetensors`` keeps: the backbone (written unprefixed, the
# layout ``model.backbone.pretrained_backbone_path`` reads) and the classifier on CLS slot 0 (kept prefixed).
_BACKBONE, _CLASSIFIER = "student.", "classifier."


def final_state(trained_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The trained module's state -> ``student_final.safetensors``'s tensors: ``student.*`` without the
    prefix, plus ``classifier.weight`` [N, C] / ``classifier.bias`` [N] when the run classifies; heads dropped."""
    out = {}
    for key, value in trained_state.items():
        if key.startswith(_BACKBONE):
            out[key.removeprefix(_BACKBONE)] = value
        elif key.startswith(_CLASSIFIER):
            out[key] = value
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def write_final_outputs(
    cfg, student, trained_state: Dict[str, torch.Tensor], teachers: List[ResolvedTeacher], results_dir: str
) -> None:
    """``student_final.safetensors`` (backbone + classifier, see ``final_state``) + ``student_final.json`` and
    the loss/mixture plots.

    trained_state: the trained module's consolidated fp32 tensors, at least ``student.*`` and ``classifier.*``
    (under ZeRO the module itself holds a bf16 working copy or a shard).
    """
    state = final_state(trained_state)
    num_classes = int(cfg.dataset.num_classes)
    tmp = os.path.join(results_dir, f".{STUDENT_FINAL_FILE}.tmp")
    save_file(
        state,
        tmp,
        metadata={"format": "radio-student", "type": cfg.model.backbone.type, "num_classes": str(num_classes)},
    )
    os.replace(tmp, os.path.join(results_dir, STUDENT_FINAL_FILE))
    meta = {
        "type": cfg.model.backbone.type,
        "embed_dim": student.embed_dim,
        "patch_size": student.patch_size,
        "num_cls_tokens": student.num_cls_tokens,
        "num_classes": num_classes,
        "classifier_keys": sorted(k for k in state if k.startswith(_CLASSIFIER)),  # on CLS slot 0, no norm
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
