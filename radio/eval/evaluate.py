"""``radio eval``: kNN top-1, per-teacher fidelity and PCA pictures of a trained run -> ``eval.json`` + PNGs.

kNN feature of an image: the student's CLS slots that summary teachers were distilled into (concatenated),
or the mean patch token when no teacher uses a summary. Fidelity and PCA use held-out images: ``images``,
else the kNN validation images, else the run's ``dataset.val_dataset`` (``images_dir``, else its first tar
source).
"""

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch

from radio.data.views import make_view
from radio.errors import CheckpointError, RadioError
from radio.eval.fidelity import adapted_features, measure_fidelity
from radio.eval.images import iter_image_batches
from radio.eval.knn import knn_top1
from radio.eval.pca import pca_rgb, save_pca_grid
from radio.export.trained_run import TrainedRun, load_trained_run
from radio.models.teacher import FrozenTeacher
from radio.run.build import build_teachers, teacher_outputs
from radio.run.layout import EVAL_FILE, PCA_PICTURE


@dataclass
class EvalOptions:
    """What to evaluate. ``max_images`` caps each image source; ``pca_images`` pictures go in the PNG."""

    checkpoint: Optional[str] = None
    knn_train: Optional[str] = None
    knn_val: Optional[str] = None
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
        or val.images_dir
        or (val.tar_data_sources[0].root_dir if val.tar_data_sources else None)
    )
    if not path:
        raise RadioError(
            "fidelity and PCA need held-out images: pass --images DIR (or --knn-val DIR), set "
            "dataset.val_dataset in the run's spec, or use --no-fidelity --no-pca"
        )
    return path


def fidelity_teachers(run: TrainedRun, device: torch.device) -> Dict[str, FrozenTeacher]:
    """The run's summary and spatial teachers, built to score fidelity against."""
    # bf16 is the training precision on GPUs; CPUs run float32 faster than bf16.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    scored = [t for t in run.teachers if t.uses_summary or t.uses_spatial]
    try:
        return build_teachers(scored, num_classes=run.cfg.dataset.num_classes, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(fidelity needs every teacher's weights; --no-fidelity skips it)") from None


def evaluate_run(results_dir: str, out_dir: str, opts: EvalOptions, device: Optional[torch.device] = None) -> dict:
    """Run the requested evaluations, write ``out_dir/eval.json`` (+ ``pca.png``) and return its content."""
    if bool(opts.knn_train) != bool(opts.knn_val):
        raise RadioError("kNN needs both --knn-train DIR and --knn-val DIR (labelled image folders or shards)")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = load_trained_run(results_dir, opts.checkpoint)
    path = held_out_path(run, opts) if opts.fidelity or opts.pca else None
    run.model.to(device)
    for norm in run.normalizers.values():
        norm.to(device)
    view = StudentView(run, device)
    os.makedirs(out_dir, exist_ok=True)
    result: Dict[str, object] = {
        "results_dir": os.path.abspath(results_dir),
        "checkpoint": os.path.abspath(run.checkpoint_dir),
        "options": asdict(opts),
    }
    if opts.knn_train:
        result["knn"] = evaluate_knn(run, view, opts)
    if path:
        result["images"] = os.path.abspath(path)
    if opts.fidelity:
        teachers = fidelity_teachers(run, device)
        size = max([view.size] + [t.input_size for t in run.teachers])
        batches = (images for images, _ in iter_image_batches(path, size, opts.batch_size, opts.max_images))
        result["fidelity"] = measure_fidelity(
            batches,
            lambda images: adapted_features(run, view(images)),
            lambda images: teacher_outputs(teachers, run.teachers, images),
        )
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
    if "knn" in result:
        knn = result["knn"]
        lines.append(
            f"kNN top-1 (k={knn['k']}, T={knn['temperature']}): {100 * knn['top1']:.2f}% "
            f"({knn['train_images']} train / {knn['val_images']} val images)"
        )
    if "fidelity" in result:
        lines.append(f"{'teacher':20s} {'summary cos':>11s} {'spatial cos':>11s} {'images':>6s}")
        for name, scores in result["fidelity"].items():
            cells = [f"{scores[k]:11.4f}" if k in scores else f"{'-':>11s}" for k in ("summary", "spatial")]
            lines.append(f"{name:20s} {cells[0]} {cells[1]} {scores['images']:6d}")
    if "pca_png" in result:
        lines.append(f"PCA pictures: {result['pca_png']}")
    return "\n".join(lines)
