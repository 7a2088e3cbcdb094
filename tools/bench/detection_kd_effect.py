"""The real effect of detection KD: a teacher trained first, then one student trained three ways, all scored on
held-out images (docs/benchmarks.md, "Detection KD effect").

Phases, in one process through ``radio.engine.loop.run`` (bf16 on a GPU, fp32 on CPU):
1. ``data``: a synthetic COCO set (``radio/data/coco_synthetic.write_synthetic_coco``);
2. ``teacher``: an RT-DETR trained on the detection loss alone; its ``detector_final/`` is the students' teacher;
3. the student with the same seed, data order and steps, three ways:
   - ``no_kd``: every binding of ``feature_logits_kd`` but ``model.distillation_loss_coef=0``: nothing is
     distilled, yet the held-out KD terms are measured, so the mismatch has a reference;
   - ``feature_kd``: ``srcs`` by TAO's IOU criterion;
   - ``feature_logits_kd``: ``srcs`` IOU + ``pred_logits`` KL + ``pred_boxes`` L1 and GIoU (Hungarian pairs);
4. each student scored by ``radio.detection.run_files.evaluate_detection_run``: val mAP / mAP50 of the student
   and the teacher, and the held-out losses (``loss/kd/srcs_IOU``: how far the student's features still are from
   the teacher's on images it never trained on).

Writes ``OUT/detection_kd_effect.json`` after every phase and prints a table: per run mAP, mAP50, held-out srcs
IOU mismatch, and ratios against ``no_kd``. Nothing asserts that KD helps: this measures it.

The student has the teacher's width (hidden 256 on the GPU): the IOU term then compares the student's own
``srcs``, with no trained 1x1 projection in between to absorb the mismatch, as in TAO's RT-DETR distillation
(ResNet-50 teacher, ResNet-18 student, both 256 wide). Teacher and student differ in the backbone only.

Rerunning the same command continues: phases already in the JSON are kept, and a run killed mid-training resumes
from its newest checkpoint (the device's 600 s per call). Other settings in the same OUT are refused.

    python tools/bench/detection_kd_effect.py --preset tiny --out /tmp/kd          # CPU, under a minute
    python tools/bench/detection_kd_effect.py --preset gpu --out bench_out/kd      # one H100/H200
"""

import argparse
import json
import os
import sys
import time
from typing import Optional

import torch
import yaml

from radio.data.coco_synthetic import write_synthetic_coco
from radio.detection.run_files import evaluate_detection_run
from radio.engine.loop import run
from radio.run.layout import DETECTOR_FINAL_DIR
from radio.run.spec import load_run_config

RESULT_FILE = "detection_kd_effect.json"
MISMATCH = "loss/kd/srcs_IOU"
FEATURE_BINDINGS = [{"teacher_module_name": "srcs", "criterion": "IOU", "weight": 2000.0}]  # specs/rtdetr_distill.yaml
LOGITS_BINDINGS = [  # weights of specs/detr_logits_distill.yaml
    {"teacher_module_name": "pred_logits", "criterion": "KL", "weight": 2.0},
    {"teacher_module_name": "pred_boxes", "criterion": "L1", "weight": 5.0},
    {"teacher_module_name": "pred_boxes", "criterion": "GIOU", "weight": 2.0},
]
STUDENT_RUNS = {  # name -> (model.distillation_loss_coef, bindings)
    "no_kd": (0.0, FEATURE_BINDINGS + LOGITS_BINDINGS),
    "feature_kd": (1.0, FEATURE_BINDINGS),
    "feature_logits_kd": (1.0, FEATURE_BINDINGS + LOGITS_BINDINGS),
}


def _rtdetr(backbone: str, out_indices, hidden: int, queries: int, denoising: int, decoder_layers: int, ffn: int):
    """An RT-DETR section trained from random weights (its backbone norms train: radio/detection/models.py)."""
    return {
        "family": "rtdetr",
        "backbone": backbone,
        "out_indices": out_indices,
        "hidden_dim": hidden,
        "num_queries": queries,
        "num_denoising": denoising,
        "encoder_layers": 1,
        "decoder_layers": decoder_layers,
        "ffn_dim": ffn,
        "attention_heads": max(2, hidden // 32),
    }


PRESETS = {
    # CPU, under a minute: timm's test models on a few dozen 64-96 px images.
    "tiny": {
        "coco": {"splits": {"train": 32, "val": 12}, "num_classes": 3, "size_range": [64, 96], "max_objects": 3},
        "teacher": _rtdetr("test_convnext", [1, 2, 3], 32, 10, 4, 2, 64),
        "student": _rtdetr("test_resnet", [2, 3, 4], 32, 10, 4, 2, 64),
        "size": 64,
        "multi_scales": [],
        "batch_size": 4,
        "workers": 0,
        "teacher_steps": 48,
        "student_steps": 32,
        "lr": 0.001,
        "precision": "fp32",
    },
    # One H100/H200, sized (not yet measured) for the whole script to end in about 7 minutes. 80 queries: at most
    # 8 objects per image.
    "gpu": {
        "coco": {
            "splits": {"train": 3000, "val": 400},
            "num_classes": 12,
            "size_range": [256, 512],
            "max_objects": 8,
            "extent_range": [16, 128],
        },
        "teacher": _rtdetr("resnet50", [2, 3, 4], 256, 80, 50, 3, 1024),
        "student": _rtdetr("resnet18", [2, 3, 4], 256, 80, 50, 3, 1024),
        "size": 448,
        "multi_scales": [384, 448, 512],
        "batch_size": 16,
        "workers": 12,
        "teacher_steps": 900,
        "student_steps": 450,
        "lr": 0.0003,
        "precision": "bf16",
    },
}


def scaled_settings(preset: str, steps_scale: float) -> dict:
    settings = {"preset": preset, "steps_scale": steps_scale, **PRESETS[preset]}
    for key in ("teacher_steps", "student_steps"):
        settings[key] = max(1, round(settings[key] * steps_scale))
    return settings


def write_coco(root: str, coco: dict) -> None:
    extra = {"extent_range": tuple(coco["extent_range"])} if "extent_range" in coco else {}
    write_synthetic_coco(
        root,
        coco["splits"],
        seed=0,
        num_classes=coco["num_classes"],
        size_range=tuple(coco["size_range"]),
        max_objects=coco["max_objects"],
        **extra,
    )


def run_spec(settings: dict, results_dir: str, coco: dict, model: dict, distill: dict, steps: int) -> dict:
    """A ``task: detection`` spec (``radio/detection/schema.py``): no validation or checkpoint inside the timed
    steps but one every quarter of the run, so a killed call resumes (the final checkpoint is written anyway)."""
    size = settings["size"]
    return {
        "task": "detection",
        "results_dir": results_dir,
        "model": model,
        "dataset": {
            "train_data_sources": [coco["train"]],
            "val_data_sources": [coco["val"]],
            "num_classes": settings["coco"]["num_classes"],
            "batch_size": settings["batch_size"],
            "workers": settings["workers"],
            "augmentation": {
                "train_spatial_size": [size, size],
                "eval_spatial_size": [size, size],
                "multi_scales": settings["multi_scales"],
            },
        },
        "train": {
            "max_steps": steps,
            "num_epochs": 10_000,  # max_steps ends the run
            "precision": settings["precision"],
            "seed": 0,
            "log_every_n_steps": max(1, steps // 20),
            "checkpoint_interval": None,
            "checkpoint_interval_steps": max(1, steps // 4),
            "keep_checkpoints": 1,
            "validation_interval": None,
            "optim": {"lr": settings["lr"], "weight_decay": 0.0001, "warmup_steps": round(steps * 0.05)},
        },
        "distill": distill,
        "logging": {"progress_bar": False},
    }


def train(work: str, name: str, spec: dict) -> dict:
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    start = time.perf_counter()
    result = run(load_run_config(path, []))
    return {"steps": result.steps, "resumed_from": result.resumed_from, "train_s": time.perf_counter() - start}


def ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """``value / reference``; None when either is missing or the reference is 0 (a student that found nothing)."""
    if value is None or not reference:
        return None
    return value / reference


def summarise(result: dict) -> dict:
    """The teacher's metrics (as the students' evaluations saw it) and each student's ratios against ``no_kd``."""
    runs = {name: result["phases"][name] for name in STUDENT_RUNS if name in result["phases"]}
    if "no_kd" not in runs:
        return {}
    reference = runs["no_kd"]
    summary = {"teacher": reference["teacher"], "ratios_vs_no_kd": {}}
    for name, entry in runs.items():
        if name != "no_kd":
            summary["ratios_vs_no_kd"][name] = {
                key: ratio(entry["student"][key], reference["student"][key]) for key in ("mAP", "mAP50")
            }
            summary["ratios_vs_no_kd"][name][MISMATCH] = ratio(
                entry["held_out"][MISMATCH], reference["held_out"][MISMATCH]
            )
    return summary


def table(result: dict) -> str:
    """Per run: val mAP, mAP50, held-out srcs IOU mismatch, ratios against ``no_kd``, training seconds."""

    def cell(value) -> str:
        return f"{value:>10.4g}" if isinstance(value, (int, float)) else f"{value or '-':>10}"

    phases, ratios = result["phases"], result.get("ratios_vs_no_kd", {})
    rows = [("run", "mAP", "mAP50", "srcs_IOU", "mAP/no_kd", "IOU/no_kd", "train s")]
    if "teacher" in result:
        teacher = result["teacher"]
        rows.append(("teacher", teacher["mAP"], teacher["mAP50"], None, None, None, phases["teacher"]["train_s"]))
    for name in STUDENT_RUNS:
        if name in phases:
            entry, r = phases[name], ratios.get(name, {})
            student = entry["student"]
            mismatch = entry["held_out"][MISMATCH]
            rows.append(
                (name, student["mAP"], student["mAP50"], mismatch, r.get("mAP"), r.get(MISMATCH), entry["train_s"])
            )
    return "\n".join(f"{row[0]:<18}" + "".join(cell(v) for v in row[1:]) for row in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--out", required=True, help="the JSON, the COCO set and every run's results_dir")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every run's optimizer steps")
    args = parser.parse_args(argv)
    settings = scaled_settings(args.preset, args.steps_scale)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    json_path = os.path.join(out, RESULT_FILE)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"device": device, "torch": torch.__version__, "settings": settings, "phases": {}}
    if os.path.exists(json_path):
        with open(json_path) as f:
            previous = json.load(f)
        if previous["settings"] != settings:
            print(f"{json_path} holds a benchmark of other settings; pass another --out.", file=sys.stderr)
            return 2
        result["phases"] = previous["phases"]

    def done(name: str, entry: dict) -> None:
        result["phases"][name] = entry
        result.update(summarise(result))
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"[{name}] {entry.get('train_s', entry.get('seconds', 0.0)):.1f} s", flush=True)

    coco_root = os.path.join(out, "coco")
    if "data" not in result["phases"]:
        start = time.perf_counter()
        write_coco(coco_root, settings["coco"])
        done("data", {"seconds": time.perf_counter() - start, "images": settings["coco"]["splits"]})
    coco = {  # write_synthetic_coco's layout
        split: {
            "image_dir": os.path.join(coco_root, split, "images"),
            "json_file": os.path.join(coco_root, split, "annotations.json"),
        }
        for split in ("train", "val")
    }

    teacher_dir = os.path.join(out, "teacher")
    if "teacher" not in result["phases"]:
        spec = run_spec(settings, teacher_dir, coco, settings["teacher"], {}, settings["teacher_steps"])
        done("teacher", train(out, "teacher", spec))

    for name, (coef, bindings) in STUDENT_RUNS.items():
        if name in result["phases"]:
            continue
        results_dir = os.path.join(out, name)
        distill = {
            "teacher": settings["teacher"],
            "pretrained_teacher_model_path": os.path.join(teacher_dir, DETECTOR_FINAL_DIR),
            "bindings": bindings,
            "matching": "hungarian",
            "temperature": 2.0,
        }
        model = {**settings["student"], "distillation_loss_coef": coef}
        entry = train(out, name, run_spec(settings, results_dir, coco, model, distill, settings["student_steps"]))
        start = time.perf_counter()
        scores = evaluate_detection_run(results_dir, os.path.join(results_dir, "eval"))
        (source,) = scores["detection"]
        entry.update(
            coef=coef,
            bindings=bindings,
            student=scores["detection"][source]["student"],
            teacher=scores["detection"][source]["teacher"],
            held_out=scores["held_out"][source],
            eval_s=time.perf_counter() - start,
        )
        done(name, entry)

    print(
        f"device: {device}; preset {args.preset}; teacher {settings['teacher_steps']} steps, students "
        f"{settings['student_steps']} steps each"
    )
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
