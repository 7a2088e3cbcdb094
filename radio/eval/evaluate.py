"""``radio eval``: kNN top-1, classification accuracy, per-teacher fidelity and PCA pictures of a trained run
-> ``eval.json`` + PNGs.

kNN feature of an image: the student's CLS slots that summary teachers were distilled into (concatenated),
or the mean patch token when no teacher uses a summary. Classification (runs with ``dataset.num_classes`` > 0,
``labelled`` images): the classifier's top-1 / top-5 and confusion matrix, and the same accuracy of the run's
logits teacher on the same images. Fidelity and PCA use held-out images: ``images``, else the kNN validation
images, else the labelled images, else the run's ``dataset.val_dataset`` (``images_dir``, else its first tar
source). Logits teachers have no features to compare: fidelity lists them as not measured, with the reason.
``init`` evaluates the module as the run initialised it (``load_initial_run``) instead of a checkpoint.
"""

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from radio.data.views import make_view
from radio.errors import CheckpointError, DataError, RadioError
from radio.eval.classification import ClassificationScore, class_names_for, save_confusion_png
from radio.eval.fidelity import adapted_features, measure_fidelity
from radio.eval.images import folder_class_names, iter_image_batches
from radio.eval.knn import knn_top1
from radio.eval.pca import pca_rgb, save_pca_grid
from radio.export.trained_run import TrainedRun, load_initial_run, load_trained_run
from radio.models.teacher import FrozenTeacher
from radio.run.build import build_teachers, teacher_dtype, teacher_outputs, teacher_view
from radio.run.layout import CONFUSION_PICTURE, EVAL_FILE, PCA_PICTURE
from radio.run.teachers import ResolvedTeacher


@dataclass
class EvalOptions:
    """What to evaluate. ``max_images`` caps each image source; ``pca_images`` pictures go in the PNG.
    ``labelled``: images with labels for the classifier's accuracy; ``init``: the module before training."""

    checkpoint: Optional[str] = None
    init: bool = False
    knn_train: Optional[str] = None
    knn_val: Optional[str] = None
    labelled: Optional[str] = None
    images: Optional[str] = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    batch_size: int = 32
    max_images: Optional[int] = None
    fidelity: bool = True
    pca: bool = True
    pca_images: int = 8


class StudentView:
    """Turns uint8 images into the student's input (its resolution and normalisation) on ``device``."""

    def __init__(self, run: TrainedRun, device: torch.device) -> None:
        aug = run.cfg.dataset.augmentation
        self.size, self.mean, self.std = int(run.cfg.dataset.img_size), list(aug.norm_mean), list(aug.norm_std)
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return make_view(images.to(self.device), self.size, self.mean, self.std)


@torch.no_grad()
def knn_features(run: TrainedRun, x: torch.Tensor) -> torch.Tensor:
    """Student input [B, 3, H, W] -> kNN feature [B, D] (see the module docstring)."""
    out = run.model.student(x)
    slots = sorted({t.summary_token_idx for t in run.teachers if t.summary_token_idx is not None})
    if slots:
        return out.cls_tokens[:, slots].flatten(1).float().cpu()
    return out.spatial.mean(dim=(2, 3)).float().cpu()


def _features(run: TrainedRun, view: StudentView, path: str, opts: EvalOptions) -> Tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for images, batch_labels in iter_image_batches(path, view.size, opts.batch_size, opts.max_images):
        feats.append(knn_features(run, view(images)))
        labels.append(batch_labels)
    feats_t, labels_t = torch.cat(feats), torch.cat(labels)
    if (labels_t < 0).any():
        raise RadioError(
            f"{path}: {int((labels_t < 0).sum())} images have no label; kNN needs class sub-folders "
            "or a .cls member in every shard sample"
        )
    return feats_t, labels_t


def evaluate_knn(run: TrainedRun, view: StudentView, opts: EvalOptions) -> Dict[str, object]:
    train_f, train_l = _features(run, view, opts.knn_train, opts)
    val_f, val_l = _features(run, view, opts.knn_val, opts)
    top1 = knn_top1(train_f, train_l, val_f, val_l, k=opts.knn_k, temperature=opts.knn_temperature)
    return {
        "top1": top1,
        "k": opts.knn_k,
        "temperature": opts.knn_temperature,
        "train_images": int(train_l.shape[0]),
        "val_images": int(val_l.shape[0]),
    }


def held_out_path(run: TrainedRun, opts: EvalOptions) -> str:
    val = run.cfg.dataset.val_dataset
    path = (
        opts.images
        or opts.knn_val
        or opts.labelled
        or val.images_dir
        or (val.tar_data_sources[0].root_dir if val.tar_data_sources else None)
    )
    if not path:
        raise RadioError(
            "fidelity and PCA need held-out images: pass --images DIR (or --knn-val / --labelled DIR), set "
            "dataset.val_dataset in the run's spec, or use --no-fidelity --no-pca"
        )
    return path


def fidelity_scored(run: TrainedRun) -> List[ResolvedTeacher]:
    """The teachers fidelity compares features with: those distilled on a summary or spatial map."""
    return [t for t in run.teachers if t.uses_summary or t.uses_spatial]


def _eval_teachers(teachers: List[ResolvedTeacher], run: TrainedRun, device: torch.device) -> Dict[str, FrozenTeacher]:
    dtype = teacher_dtype(run.cfg, device)  # as training ran them (distill.teacher_precision)
    return build_teachers(teachers, num_classes=run.cfg.dataset.num_classes, device=device, dtype=dtype)


def fidelity_teachers(run: TrainedRun, device: torch.device) -> Dict[str, FrozenTeacher]:
    """The run's summary and spatial teachers, built to score fidelity against."""
    try:
        return _eval_teachers(fidelity_scored(run), run, device)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(fidelity needs every teacher's weights; --no-fidelity skips it)") from None


def fidelity_not_measured(run: TrainedRun, measured: Dict[str, object]) -> Dict[str, str]:
    """Why each teacher missing from the fidelity scores was not measured."""
    return {
        t.name: (
            "logits teacher (no features to compare; --labelled scores its accuracy)"
            if t.mode == "logits"
            else "no feature kind the student and the teacher both have"
        )
        for t in run.teachers
        if t.name not in measured
    }


def _labelled_batches(
    path: str, size: int, opts: EvalOptions, num_classes: int
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``iter_image_batches`` of the labelled images, every label checked to be in [0, num_classes)."""
    for images, labels in iter_image_batches(path, size, opts.batch_size, opts.max_images):
        if (labels < 0).any():
            raise DataError(
                f"--labelled {path}: {int((labels < 0).sum())} images have no label; accuracy needs class "
                "sub-folders or a .cls member in every shard sample"
            )
        if (labels >= num_classes).any():
            raise DataError(
                f"--labelled {path}: label {int(labels.max())} is outside the run's classes (dataset.num_classes is "
                f"{num_classes}: labels 0..{num_classes - 1}; class sub-folders are numbered in sorted order)"
            )
        yield images, labels


def _logits_teacher_score(
    run: TrainedRun, opts: EvalOptions, device: torch.device
) -> Tuple[Optional[Dict[str, object]], Optional[str]]:
    """(the logits teacher's scores, None) or (None, why it was not measured)."""
    teacher = next((t for t in run.teachers if t.mode == "logits"), None)
    if teacher is None:
        return None, "none in this run"
    if not opts.fidelity:
        return None, f"{teacher.name} not measured (--no-fidelity: teacher weights not loaded)"
    try:
        built = _eval_teachers([teacher], run, device)
    except CheckpointError as exc:
        return None, f"{teacher.name} not measured, its weights do not load ({str(exc).splitlines()[0]})"
    num_classes = run.cfg.dataset.num_classes
    score = ClassificationScore(num_classes)
    with torch.no_grad():
        for images, labels in _labelled_batches(opts.labelled, teacher_view(teacher).size, opts, num_classes):
            score.add(teacher_outputs(built, [teacher], images)[teacher.name].logits, labels)
    return {"name": teacher.name, **score.as_dict()}, None


def evaluate_classification(run: TrainedRun, view: StudentView, opts: EvalOptions, out_dir: str) -> Dict[str, object]:
    """The classifier's top-1 / top-5 and confusion matrix on ``opts.labelled`` (+ PNG), and the logits
    teacher's accuracy on the same images when its weights load."""
    num_classes = int(run.cfg.dataset.num_classes)
    if run.model.classifier is None:
        raise RadioError(
            f"--labelled {opts.labelled}: this run has no classifier (dataset.num_classes is 0); feature runs are "
            "scored with --knn-train/--knn-val"
        )
    score = ClassificationScore(num_classes)
    with torch.no_grad():
        for images, labels in _labelled_batches(opts.labelled, view.size, opts, num_classes):
            score.add(run.model(view(images))["_logits"]["logits"], labels)
    names = class_names_for(num_classes, folder_class_names(opts.labelled))
    picture = os.path.join(out_dir, CONFUSION_PICTURE)
    which = "student" if run.checkpoint_dir else "student as initialised"
    save_confusion_png(score.confusion, names, picture, title=f"{which}: confusion matrix ({score.images} images)")
    result: Dict[str, object] = {
        "images": os.path.abspath(opts.labelled),
        "num_classes": num_classes,
        "class_names": names,
        "student": score.as_dict(),
        "confusion_matrix": score.confusion.tolist(),
        "confusion_png": os.path.abspath(picture),
    }
    teacher, skipped = _logits_teacher_score(run, opts, view.device)
    result.update({"teacher": teacher} if teacher is not None else {"teacher_skipped": skipped})
    return result


def evaluate_run(results_dir: str, out_dir: str, opts: EvalOptions, device: Optional[torch.device] = None) -> dict:
    """Run the requested evaluations, write ``out_dir/eval.json`` (+ ``pca.png``) and return its content."""
    if bool(opts.knn_train) != bool(opts.knn_val):
        raise RadioError("kNN needs both --knn-train DIR and --knn-val DIR (labelled image folders or shards)")
    if opts.init and opts.checkpoint:
        raise RadioError(
            f"--init evaluates the run as initialised, without a checkpoint; it cannot be combined with "
            f"--checkpoint / evaluate.checkpoint ({opts.checkpoint})"
        )
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = load_initial_run(results_dir) if opts.init else load_trained_run(results_dir, opts.checkpoint)
    path = held_out_path(run, opts) if opts.fidelity or opts.pca else None
    run.model.to(device)
    for norm in run.normalizers.values():
        norm.to(device)
    view = StudentView(run, device)
    os.makedirs(out_dir, exist_ok=True)
    result: Dict[str, object] = {
        "results_dir": os.path.abspath(results_dir),
        "checkpoint": (
            os.path.abspath(run.checkpoint_dir)
            if run.checkpoint_dir
            else f"none: the student as initialised (train.seed={run.cfg.train.seed})"
        ),
        "init": opts.init,
        "options": asdict(opts),
    }
    if opts.knn_train:
        result["knn"] = evaluate_knn(run, view, opts)
    if opts.labelled:
        result["classification"] = evaluate_classification(run, view, opts, out_dir)
    if path:
        result["images"] = os.path.abspath(path)
    if opts.fidelity:
        result["fidelity"] = {}
        if fidelity_scored(run):
            teachers = fidelity_teachers(run, device)
            size = max([view.size] + [t.input_size for t in run.teachers])
            batches = (images for images, _ in iter_image_batches(path, size, opts.batch_size, opts.max_images))
            result["fidelity"] = measure_fidelity(
                batches,
                lambda images: adapted_features(run, view(images)),
                lambda images: teacher_outputs(teachers, run.teachers, images),
            )
        result["fidelity_not_measured"] = fidelity_not_measured(run, result["fidelity"])
    if opts.pca:
        images, _ = next(iter_image_batches(path, view.size, opts.pca_images, opts.pca_images))
        with torch.no_grad():
            spatial = run.model.student(view(images)).spatial
        picture = os.path.join(out_dir, PCA_PICTURE)
        save_pca_grid(images, pca_rgb(spatial), picture, title="student features: first 3 PCA components")
        result["pca_png"] = os.path.abspath(picture)
    with open(os.path.join(out_dir, EVAL_FILE), "w") as f:
        json.dump(result, f, indent=2)
    return result


def format_table(result: dict) -> str:
    """A short human-readable summary of ``evaluate_run``'s result."""
    lines: List[str] = []
    if result.get("init"):
        lines.append(f"weights: {result['checkpoint']}")
    if "knn" in result:
        knn = result["knn"]
        lines.append(
            f"kNN top-1 (k={knn['k']}, T={knn['temperature']}): {100 * knn['top1']:.2f}% "
            f"({knn['train_images']} train / {knn['val_images']} val images)"
        )
    if "classification" in result:
        lines.extend(_classification_lines(result["classification"]))
    if "fidelity" in result and not result["fidelity"] and not result.get("fidelity_not_measured"):
        lines.append("fidelity: no teachers in this run")
    elif "fidelity" in result:
        lines.append(f"{'teacher':20s} {'summary cos':>11s} {'spatial cos':>11s} {'images':>6s}")
        for name, scores in result["fidelity"].items():
            cells = [f"{scores[k]:11.4f}" if k in scores else f"{'-':>11s}" for k in ("summary", "spatial")]
            lines.append(f"{name:20s} {cells[0]} {cells[1]} {scores['images']:6d}")
        for name, why in result.get("fidelity_not_measured", {}).items():
            lines.append(f"{name:20s} {'-':>11s} {'-':>11s} {'-':>6s}  not measured: {why}")
    else:
        lines.append("fidelity: not measured (--no-fidelity)")
    if "pca_png" in result:
        lines.append(f"PCA pictures: {result['pca_png']}")
    return "\n".join(lines)


def _classification_lines(cls: dict) -> List[str]:
    k = cls["student"]["top5_k"]
    lines = [
        f"classification on {cls['images']} ({cls['student']['images']} images, {cls['num_classes']} classes):",
        f"  {'model':30s} {'top-1':>8s} {f'top-{k}':>8s}",
    ]
    rows = [("student", cls["student"])]
    if "teacher" in cls:
        rows.append((f"logits teacher {cls['teacher']['name']}", cls["teacher"]))
    for label, scores in rows:
        lines.append(f"  {label:30s} {100 * scores['top1']:7.2f}% {100 * scores['top5']:7.2f}%")
    if "teacher_skipped" in cls:
        lines.append(f"  logits teacher: {cls['teacher_skipped']}")
    lines.append(f"  confusion matrix: {cls['confusion_png']}")
    return lines
