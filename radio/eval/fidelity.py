"""Per-teacher fidelity: how close the adapted student's features are to the real teacher's.

Summary: cosine between the summary head's output and the teacher summary, both through a non-affine
LayerNorm (the loss's target normalisation; the head was trained to predict the LayerNorm-ed summary).
Spatial: per-token cosine between the spatial head's output in teacher space (normaliser inverted) and the
teacher's feature map, on the smaller of the two grids (bilinear, as the loss matches them). Both are
means over images (spatial: first over each image's tokens).
"""

from typing import Callable, Dict, Iterable

import torch
import torch.nn.functional as F

from radio.export.trained_run import TrainedRun
from radio.losses.spatial import match_grids
from radio.losses.summary import layer_norm_target
from radio.models.teacher import TeacherOutput

Features = Dict[str, Dict[str, torch.Tensor]]  # teacher name -> {"summary": [B, Ds], "spatial": [B, Ct, h, w]}


def summary_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target [B, D] -> [B] cosine after a non-affine LayerNorm of each."""
    return F.cosine_similarity(layer_norm_target(pred.float()), layer_norm_target(target.float()), dim=-1)


def spatial_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred [B, C, hp, wp], target [B, C, ht, wt] -> [B] mean per-token cosine on the smaller grid."""
    pred, target = match_grids(pred.float(), target.float())
    return F.cosine_similarity(pred, target, dim=1).flatten(1).mean(1)


@torch.no_grad()
def adapted_features(run: TrainedRun, student_input: torch.Tensor) -> Features:
    """The trained module's per-teacher predictions, spatial maps mapped back to teacher space."""
    preds = run.model(student_input)
    out: Features = {}
    for t in run.teachers:
        pred = {k: v for k, v in preds[t.name].items() if k in ("summary", "spatial")}
        if "spatial" in pred:
            pred["spatial"] = run.normalizers[t.name].inverse(pred["spatial"])
        out[t.name] = pred
    return out


def measure_fidelity(
    batches: Iterable[torch.Tensor],
    predict: Callable[[torch.Tensor], Features],
    targets: Callable[[torch.Tensor], Dict[str, TeacherOutput]],
) -> Dict[str, Dict[str, float]]:
    """Mean cosines ``{teacher: {"summary": c, "spatial": c, "images": n}}`` over uint8 image batches.

    ``predict(images)`` gives the adapted student's features, ``targets(images)`` the teachers' outputs;
    only the kinds present in both are scored.
    """
    sums: Dict[str, Dict[str, float]] = {}
    counts: Dict[str, int] = {}
    for images in batches:
        preds, outs = predict(images), targets(images)
        for name, pred in preds.items():
            if name not in outs:
                continue
            target = outs[name]
            scores = sums.setdefault(name, {})
            if "summary" in pred and target.summary is not None:
                cos = summary_cosine(pred["summary"].cpu(), target.summary.cpu())
                scores["summary"] = scores.get("summary", 0.0) + float(cos.sum())
            if "spatial" in pred and target.spatial is not None:
                cos = spatial_cosine(pred["spatial"].cpu(), target.spatial.cpu())
                scores["spatial"] = scores.get("spatial", 0.0) + float(cos.sum())
            counts[name] = counts.get(name, 0) + images.shape[0]
    return {
        name: {**{kind: total / counts[name] for kind, total in scores.items()}, "images": counts[name]}
        for name, scores in sums.items()
    }
