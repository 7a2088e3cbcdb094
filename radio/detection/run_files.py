"""A finished (or checkpointed) detection run, read back for ``radio eval`` and ``radio export``.

``radio eval`` (``evaluate_detection_run``) scores the student on the run's ``dataset.val_data_sources``: COCO
mAP, mAP50, mAP75 and S/M/L by pycocotools, the teacher's on the same images, and the held-out losses — the
detection loss and every binding's distillation term, i.e. how far the student still is from its teacher on
images it did not train on. ``radio export`` (``export_detection_run``) writes the student alone as a
transformers folder (projections dropped) that ``AutoModelForObjectDetection.from_pretrained`` reloads.
"""

import json
import math
import os
from typing import Dict, Optional

import torch
from safetensors.torch import load_file

from radio.detection.bindings import resolve_bindings
from radio.detection.data import coco_sources, detection_eval_batches
from radio.detection.models import export_detector
from radio.detection.objective import DetectionDistiller, DetectionTeacher
from radio.detection.predictions import evaluate_detector
from radio.detection.task import build_distiller, build_student, load_teacher, start_from_teacher
from radio.errors import RadioError
from radio.models.checkpoint_io import load_exact
from radio.run.build import teacher_dtype
from radio.run.layout import EVAL_FILE, MODEL_FILE, find_checkpoint_dir, load_results_config

_OTHER_RUN = "The checkpoint is not this run's (another spec wrote it); pass a checkpoint of this results_dir."


def load_detection_distiller(cfg, results_dir: str, checkpoint: Optional[str], *, init: bool, device) -> tuple:
    """(``DetectionDistiller`` in eval mode on ``device``, its ``DetectionTeacher`` or None, the checkpoint
    folder or None): the trained module as the checkpoint holds it, or as the run initialised it (``init``)."""
    bindings = resolve_bindings(cfg.distill, student_family=cfg.model.family) if cfg.distill.teacher else []
    student = build_student(cfg)
    teacher_model = load_teacher(cfg)
    if init:  # the student as the run started it
        start_from_teacher(cfg, student, teacher_model)
    teacher = None
    if teacher_model is not None:
        dtype = teacher_dtype(cfg, device)
        teacher = DetectionTeacher(
            teacher_model.to(device=device, dtype=dtype), bindings, dtype=dtype, matching=cfg.distill.matching
        )
    distiller = build_distiller(cfg, student.to(device), bindings, teacher)
    folder = None
    if not init:
        folder = find_checkpoint_dir(results_dir, checkpoint)
        path = os.path.join(folder, MODEL_FILE)
        load_exact(distiller, load_file(path, device=str(device)), path, "radio detection checkpoint", _OTHER_RUN)
    return distiller.eval(), teacher, folder


@torch.no_grad()
def held_out_losses(
    distiller: DetectionDistiller, teacher: Optional[DetectionTeacher], batches, device
) -> Dict[str, float]:
    """The mean per image of ``loss/detection`` and each binding's ``loss/kd/...`` term over ``batches``."""
    sums: Dict[str, float] = {}
    images = 0
    for batch in batches:
        batch = batch.to(device)
        signals = teacher(batch.pixel_values, batch.labels) if teacher is not None else None
        result = distiller(batch.pixel_values, batch.labels, signals)
        count = len(batch.labels)
        images += count
        for key, value in result.extra.items():
            sums[key] = sums.get(key, 0.0) + float(value) * count
    return {key: value / max(images, 1) for key, value in sums.items()}


def evaluate_detection_run(
    results_dir: str,
    out: str,
    *,
    cfg=None,
    checkpoint: Optional[str] = None,
    init: bool = False,
    batch_size: Optional[int] = None,
    with_teacher: bool = True,
) -> dict:
    """``eval.json`` in ``out``: per val source the student's and the teacher's COCO metrics and the held-out
    losses; returns the same dict. ``cfg``: the run's config (default: its ``config.yaml``); ``checkpoint``
    (default ``evaluate.checkpoint``, else the newest). ``with_teacher`` False: the student alone (its mAP and
    detection loss; no teacher weights read)."""
    if cfg is None:
        cfg, _ = load_results_config(results_dir)
    checkpoint = checkpoint or cfg.evaluate.checkpoint
    if not cfg.dataset.val_data_sources:
        raise RadioError(
            f"{results_dir}: the run has no dataset.val_data_sources to score; give COCO val sources with "
            "radio eval -e SPEC 'dataset.val_data_sources=[{image_dir: ..., json_file: ...}]'."
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if with_teacher or cfg.distill.teacher is None:
        distiller, teacher, folder = load_detection_distiller(cfg, results_dir, checkpoint, init=init, device=device)
    else:
        if init and cfg.model.load_teacher_enc_dec:
            raise RadioError(
                "--init with --no-fidelity: this run started its student from the teacher (model.load_teacher_enc_dec),"
                " so the student as initialised needs the teacher's weights; drop --no-fidelity."
            )
        student, folder = (build_student(cfg), None) if init else load_checkpoint_student(cfg, results_dir, checkpoint)
        distiller, teacher = DetectionDistiller(student.to(device), []).eval(), None
    ds, aug = cfg.dataset, cfg.dataset.augmentation
    result = {"task": "detection", "checkpoint": folder, "init": init, "detection": {}, "held_out": {}}

    def batches(source):
        return detection_eval_batches(
            source,
            batch_size=batch_size or ds.batch_size,
            workers=ds.workers,
            spatial_size=tuple(aug.eval_spatial_size),
            norm_mean=list(aug.norm_mean),
            norm_std=list(aug.norm_std),
        )

    for source in coco_sources(ds.val_data_sources, num_classes=ds.num_classes, section="val_data_sources"):
        scores = {"images": source.num_images}
        models = {"student": (distiller.student, torch.float32)}
        if teacher is not None:
            models["teacher"] = (teacher.model, teacher.dtype)
        for who, (model, dtype) in models.items():
            metrics = evaluate_detector(
                model,
                batches(source),
                source.json_file,
                device=device,
                dtype=dtype,
                max_detections=cfg.evaluate.max_detections,
            )
            scores[who] = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
        result["detection"][source.name] = scores
        result["held_out"][source.name] = held_out_losses(distiller, teacher, batches(source), device)
    os.makedirs(out, exist_ok=True)
    result["eval_json"] = os.path.join(out, EVAL_FILE)
    with open(result["eval_json"], "w") as f:
        json.dump(result, f, indent=2)
    return result


def format_detection_table(result: dict) -> str:
    """The console table of ``evaluate_detection_run``'s result."""
    metrics = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")
    heads = " ".join(f"{m.removeprefix('mAP_') if m.startswith('mAP_') else m:>7}" for m in metrics)
    lines = [f"{'source':<16} {'model':<8} {heads} {'images':>7}"]
    for name, scores in result["detection"].items():
        for who in ("student", "teacher"):
            if who in scores:
                m = scores[who]
                cells = [f"{m[k]:7.4f}" if m.get(k) is not None else f"{'-':>7}" for k in metrics]
                lines.append(f"{name:<16} {who:<8} {' '.join(cells)} {scores['images']:>7}")
        for key, value in result["held_out"][name].items():
            lines.append(f"{name:<16} held-out {key} = {value:.5g}")
    return "\n".join(lines)


def load_checkpoint_student(cfg, results_dir: str, checkpoint: Optional[str]) -> tuple:
    """(the student detector of a checkpoint, fp32 on CPU, its folder): the ``student.*`` tensors loaded strictly
    into a bare student; no teacher is needed."""
    folder = find_checkpoint_dir(results_dir, checkpoint)
    path = os.path.join(folder, MODEL_FILE)
    state = load_file(path)
    student_state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    student = build_student(cfg)
    load_exact(student, student_state, path, "radio detection checkpoint (student.*)", _OTHER_RUN)
    return student.eval(), folder


def export_detection_run(results_dir: str, out: str, checkpoint: Optional[str] = None) -> dict:
    """The checkpoint's student as a transformers folder in ``out`` plus ``export.json``; returns the manifest."""
    cfg, _ = load_results_config(results_dir)
    student, folder = load_checkpoint_student(cfg, results_dir, checkpoint or cfg.evaluate.checkpoint)
    export_detector(student, out)
    manifest = {
        "task": "detection",
        "checkpoint": folder,
        "family": cfg.model.family,
        "backbone": cfg.model.backbone,
        "num_classes": int(cfg.dataset.num_classes),
        "eval_spatial_size": list(cfg.dataset.augmentation.eval_spatial_size),
        "norm_mean": list(cfg.dataset.augmentation.norm_mean),
        "norm_std": list(cfg.dataset.augmentation.norm_std),
        "load_call": f"transformers.AutoModelForObjectDetection.from_pretrained({os.path.abspath(out)!r})",
    }
    with open(os.path.join(out, "export.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
