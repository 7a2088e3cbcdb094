"""One micro-batch's loss: teacher targets on their own views, student predictions, the weighted total."""

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn

from radio.config.resolve import ResolvedTeacher
from radio.data.views import ViewPlan, make_view
from radio.engine.targets import SpatialTargets
from radio.losses.aggregate import aggregate_teacher_losses, label_cross_entropy


@dataclass
class MicroBatchLoss:
    loss: torch.Tensor  # scalar to backpropagate
    terms: Dict[str, Dict[str, torch.Tensor]]  # per teacher: "total" and each feature kind's term
    skipped: List[str]  # teachers whose term was non-finite and left out
    extra: Dict[str, torch.Tensor]  # other logged scalars (e.g. "loss/label_ce")


class DistillationObjective:
    def __init__(
        self,
        teachers_cfg: List[ResolvedTeacher],
        teachers: Dict[str, nn.Module],
        criteria: nn.ModuleDict,
        spatial_targets: SpatialTargets,
        plan: ViewPlan,
    ):
        self.teachers_cfg = teachers_cfg
        self.teachers = teachers
        self.criteria = criteria
        self.spatial_targets = spatial_targets
        self.plan = plan
        self.lambdas = {t.name: t.loss_lambda for t in teachers_cfg}
        self.mean_lambda = sum(self.lambdas.values()) / len(self.lambdas)

    def teacher_targets(self, images: torch.Tensor, sizes: Dict[str, int]) -> Dict[str, Dict[str, torch.Tensor]]:
        """images: uint8 [B,3,S,S] shared crops on the device. Each teacher sees them at its own resolution
        and normalisation; spatial targets come out normalised (PHI-S ...)."""
        targets = {}
        for t in self.teachers_cfg:
            out = self.teachers[t.name](make_view(images, sizes[t.name], t.norm_mean, t.norm_std))
            target: Dict[str, torch.Tensor] = {}
            if t.uses_summary:
                target["summary"] = out.summary
            if t.uses_spatial:
                target["spatial"] = self.spatial_targets(t.name, out.spatial)
            if t.mode == "logits":
                target["logits"] = out.logits
            targets[t.name] = target
        return targets

    def __call__(self, preds, targets, labels: torch.Tensor) -> MicroBatchLoss:
        terms = {t.name: self.criteria[t.name](preds[t.name], targets[t.name]) for t in self.teachers_cfg}
        loss, skipped = aggregate_teacher_losses({n: v["total"] for n, v in terms.items()}, self.lambdas)
        extra: Dict[str, torch.Tensor] = {}
        if "_logits" in preds:
            # (1 − λ̄)·CE(labels) + Σ λ_i/N · L_i: for one teacher exactly (1 − λ)·CE + λ·L_distill.
            # Labels of -1 (unlabelled samples) are left out of the CE mean.
            label_ce = label_cross_entropy(preds["_logits"]["logits"], labels)
            loss = loss + (1.0 - self.mean_lambda) * label_ce
            extra["loss/label_ce"] = label_ce
        return MicroBatchLoss(loss, terms, skipped, extra)
