"""One micro-batch's loss: teacher targets on their own views, student predictions, the weighted total."""

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn

from radio.engine.targets import SpatialTargets
from radio.losses.aggregate import aggregate_teacher_losses, label_cross_entropy
from radio.models.teacher import TeacherOutput
from radio.phases import NO_PHASES
from radio.run.build import teacher_outputs
from radio.run.teachers import ResolvedTeacher


@dataclass
class MicroBatchLoss:
    loss: torch.Tensor  # scalar to backpropagate
    terms: Dict[str, Dict[str, torch.Tensor]]  # per teacher, for logging: "total" and each kind (NaN if left out)
    skipped: torch.Tensor  # bool [teachers], in ``teachers_cfg`` order: the term was left out (non-finite)
    extra: Dict[str, torch.Tensor]  # other logged scalars (e.g. "loss/label_ce")


class DistillationObjective:
    def __init__(
        self,
        teachers_cfg: List[ResolvedTeacher],
        teachers: Dict[str, nn.Module],
        criteria: nn.ModuleDict,
        spatial_targets: SpatialTargets,
    ):
        self.teachers_cfg = teachers_cfg
        self.teachers = teachers
        self.criteria = criteria
        self.spatial_targets = spatial_targets
        self.lambdas = {t.name: t.loss_lambda for t in teachers_cfg}
        # No teachers (label-only training): λ̄ = 0, so the total below is the label CE alone.
        self.mean_lambda = sum(self.lambdas.values()) / len(self.lambdas) if self.lambdas else 0.0

    def teacher_outputs(
        self, images: torch.Tensor, sizes: Dict[str, int], phases=NO_PHASES
    ) -> Dict[str, TeacherOutput]:
        """images: uint8 [B,3,S,S] shared crops on the device; each teacher sees them at its own resolution
        (``sizes``) and normalisation; ``phases`` times each teacher (``radio/phases.py``)."""
        return teacher_outputs(self.teachers, self.teachers_cfg, images, sizes, phases)

    def observe(self, outputs: Dict[str, TeacherOutput], *, starts_step: bool) -> None:
        """Add a micro-batch's spatial features to the target normalisers' statistics (``starts_step``: the
        optimizer step's first micro-batch)."""
        for t in self.teachers_cfg:
            if t.uses_spatial:
                self.spatial_targets.observe(t.name, outputs[t.name].spatial, starts_step=starts_step)

    def refresh_targets(self) -> List[str]:
        """Once per optimizer step, before its first targets: due normalisers refresh and the spatial heads
        of those teachers are re-based (trained weights change here; ``engine/targets.py``)."""
        return self.spatial_targets.refresh()

    def targets(self, outputs: Dict[str, TeacherOutput]) -> Dict[str, Dict[str, torch.Tensor]]:
        """The kinds each teacher is distilled on; spatial targets normalised (PHI-S ...)."""
        targets = {}
        for t in self.teachers_cfg:
            out = outputs[t.name]
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
        # A teacher whose targets are non-finite (NaN weights, a normaliser that has seen no finite
        # features) is left out on the device: its targets are replaced by zeros so its term and gradients
        # stay finite, and the term is weighted 0 (losses/aggregate.py) — no host sync per micro-batch.
        # One sum per target tells: it is non-finite when a value is (or when the values are so large that
        # the loss would overflow anyway), at the cost of one reduction rather than an element-wise test.
        valid, clean = {}, {}
        for name, target in targets.items():
            ok = torch.isfinite(torch.stack([v.sum() for v in target.values()]).sum())
            valid[name] = ok
            clean[name] = {k: torch.where(ok, v, 0.0) for k, v in target.items()}
        terms = {t.name: self.criteria[t.name](preds[t.name], clean[t.name]) for t in self.teachers_cfg}
        if terms:
            loss, skipped = aggregate_teacher_losses({n: v["total"] for n, v in terms.items()}, self.lambdas, valid)
        else:  # label-only training: nothing to aggregate, the CE below is the loss
            loss = torch.zeros((), device=labels.device)
            skipped = torch.zeros(0, dtype=torch.bool, device=labels.device)
        nan = torch.full_like(loss, float("nan")).detach()
        logged = {
            name: {k: torch.where(dropped, nan, v.detach()) for k, v in parts.items()}
            for (name, parts), dropped in zip(terms.items(), skipped)
        }
        extra: Dict[str, torch.Tensor] = {}
        if "_logits" in preds:
            # (1 − λ̄)·CE(labels) + Σ λ_i/N · L_i: for one teacher exactly (1 − λ)·CE + λ·L_distill.
            # Labels of -1 (unlabelled samples) are left out of the CE mean.
            label_ce = label_cross_entropy(preds["_logits"]["logits"], labels)
            loss = loss + (1.0 - self.mean_lambda) * label_ce
            extra["loss/label_ce"] = label_ce
        return MicroBatchLoss(loss, logged, skipped, extra)
