"""The detection objective: the student detector's own loss plus ``distillation_loss_coef · Σ weight · L`` over
the spec's bindings (docs/detection.md), each weight applied once.

``DetectionTeacher`` runs the frozen teacher without autograd and keeps what the bindings read (its outputs,
captured features and, for ``IOU``, its encoder query selection). ``DetectionDistiller`` is the trained module
the engine wraps (DDP / DeepSpeed): the student detector and, where widths differ, one feature projection per
feature binding; its forward computes the whole loss, so every trained parameter is used inside it.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from radio.detection.bindings import OUTPUT_TERMS, Binding
from radio.detection.features import FeatureCapture, build_feature_projection, rtdetr_query_selection
from radio.detection.losses import (
    check_feature_levels,
    feature_kd_loss,
    iou_masked_feature_loss,
    logits_kd_losses,
    strip_denoising,
)
from radio.detection.matching import QueryPairs, gt_pairs, hungarian_pairs, index_pairs
from radio.errors import SpecError

_ENC_OUTPUT = "enc_output"


@dataclass
class TeacherSignals:
    """What one teacher forward gives the bindings (no autograd)."""

    logits: torch.Tensor  # [B, Nt, C]
    boxes: torch.Tensor  # [B, Nt, 4] normalised cx, cy, w, h
    features: Dict[str, List[torch.Tensor]] = field(default_factory=dict)
    selection: Optional[tuple] = None  # (queries, scores, boxes) of the encoder's query selection, for IOU
    matches: Optional[list] = None  # the teacher's own Hungarian matches to the ground truth, for matching=gt


@dataclass
class DetectionLoss:
    """One micro-batch's loss, in the shape the engine's ``MetricsWindow`` reads."""

    loss: torch.Tensor
    extra: Dict[str, torch.Tensor]  # loss/detection, loss/distillation, loss/kd/<binding>
    terms: dict = field(default_factory=dict)
    skipped: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))


def ground_truth_matcher(model: nn.Module):
    """The detector's own Hungarian matcher (transformers'), for ``matching: gt``."""
    config = model.config
    if config.model_type == "deformable_detr":
        from transformers.loss.loss_deformable_detr import DeformableDetrHungarianMatcher

        return DeformableDetrHungarianMatcher(config.class_cost, config.bbox_cost, config.giou_cost)
    from transformers.loss.loss_rt_detr import RTDetrHungarianMatcher

    return RTDetrHungarianMatcher(config)


def _feature_names(bindings: Sequence[Binding], side: str, *, iou: bool) -> List[str]:
    names = [getattr(b, side) for b in bindings if not b.is_output]
    if iou and side == "teacher":
        names.append(_ENC_OUTPUT)
    return list(dict.fromkeys(names))


class DetectionTeacher:
    """The frozen teacher (eval, no gradients) and the captures its bindings need."""

    def __init__(self, model: nn.Module, bindings: Sequence[Binding], *, dtype: torch.dtype, matching: str):
        self.model = model
        self.dtype = dtype
        self.uses_iou = any(b.criterion == "IOU" for b in bindings)
        self.capture = FeatureCapture(model, _feature_names(bindings, "teacher", iou=self.uses_iou))
        outputs_bound = any(b.is_output for b in bindings)
        self.matcher = ground_truth_matcher(model) if matching == "gt" and outputs_bound else None

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, labels: Optional[list] = None) -> TeacherSignals:
        outputs = self.model(pixel_values=pixel_values.to(self.dtype))
        features = {name: [t.float() for t in self.capture[name]] for name in self.capture.names}
        logits, boxes = outputs.logits.float(), outputs.pred_boxes.float()
        signals = TeacherSignals(logits, boxes, features)
        if self.uses_iou:
            signals.selection = rtdetr_query_selection(outputs, features[_ENC_OUTPUT][0])
        if self.matcher is not None and labels is not None:  # the probe forward has no labels
            signals.matches = self.matcher({"logits": logits, "pred_boxes": boxes}, labels)
        self.capture.clear()
        return signals


class DetectionDistiller(nn.Module):
    """The trained module: ``student`` (a transformers detector) and ``projections`` (``str(binding.index)`` ->
    ``FeatureProjection``, only for feature bindings whose widths differ). ``forward`` returns a
    ``DetectionLoss``: the student's detection loss + ``coef · Σ weight · L``."""

    def __init__(
        self,
        student: nn.Module,
        bindings: Sequence[Binding],
        *,
        teacher: Optional[DetectionTeacher] = None,
        coef: float = 1.0,
        matching: str = "hungarian",
        logits_kd_kind: str = "sigmoid_kl",
        temperature: float = 1.0,
        confidence_weighted: bool = True,
        probe_size: Sequence[int] = (64, 64),
    ):
        """``probe_size``: (height, width) of the probe forward that finds the feature widths — the training size
        (RT-DETR selects ``num_queries`` of the encoder's locations, so a small probe may hold too few)."""
        super().__init__()
        self.student = student
        self.bindings = list(bindings)
        self.coef, self.matching = coef, matching
        self.logits_kd = {
            "kind": logits_kd_kind,
            "temperature": temperature,
            "confidence_weighted": confidence_weighted,
        }
        self.capture = FeatureCapture(student, _feature_names(self.bindings, "student", iou=False))
        self.matcher = ground_truth_matcher(student) if matching == "gt" else None
        self.projections = nn.ModuleDict()
        if teacher is not None and any(not b.is_output for b in self.bindings):
            self._build_projections(teacher, probe_size)

    def _build_projections(self, teacher: DetectionTeacher, probe_size: Sequence[int]) -> None:
        """One probe forward of both models gives each feature binding's levels; a projection is built where the
        widths differ, and mismatched level counts or grids are refused here, before training starts."""
        probe = torch.zeros(1, 3, *probe_size, device=next(self.student.parameters()).device)
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            self.student(pixel_values=probe)
            signals = teacher(probe)
        self.student.train(was_training)
        for b in self.bindings:
            if b.is_output:
                continue
            student_maps, teacher_maps = self.capture[b.student], signals.features[b.teacher]
            projection = build_feature_projection(student_maps, teacher_maps)
            if projection is not None:
                self.projections[str(b.index)] = projection.to(probe.device)
                student_maps = projection(student_maps)
            try:
                check_feature_levels(student_maps, teacher_maps, b.teacher)
            except ValueError as exc:
                raise SpecError(f"distill.bindings[{b.index}]: {exc}.") from None
        self.capture.clear()

    def forward(self, pixel_values: torch.Tensor, labels: list, teacher: Optional[TeacherSignals]) -> DetectionLoss:
        outputs = self.student(pixel_values=pixel_values, labels=labels)
        detection = outputs.loss + self._unused_denoising_embedding(outputs)
        extra = {"loss/detection": detection.detach()}
        if teacher is None or not self.bindings:
            self.capture.clear()
            return DetectionLoss(detection, extra)
        terms = self._binding_losses(outputs, labels, teacher)
        self.capture.clear()
        distillation = sum(b.weight * terms[b.tag] for b in self.bindings)
        extra["loss/distillation"] = distillation.detach()
        extra.update({f"loss/{tag}": value.detach() for tag, value in terms.items()})
        return DetectionLoss(detection + self.coef * distillation, extra)

    def _unused_denoising_embedding(self, outputs) -> torch.Tensor:
        """0, through the denoising class embedding when this forward built no denoising group (a micro-batch
        without objects): DDP waits for a gradient of every parameter, and one rank's empty batch would stall the
        others. Called as a module, so ZeRO-3 gathers its weight."""
        embedding = getattr(getattr(self.student, "model", None), "denoising_class_embed", None)
        if not self.training or embedding is None or getattr(outputs, "denoising_meta_values", None) is not None:
            return outputs.loss.new_zeros(())
        index = torch.zeros(1, dtype=torch.long, device=outputs.loss.device)
        return embedding(index).sum() * 0.0

    def _binding_losses(self, outputs, labels: list, teacher: TeacherSignals) -> Dict[str, torch.Tensor]:
        """Each binding's unweighted loss, by its tag."""
        losses = {}
        output_terms = None
        for b in self.bindings:
            if b.is_output:
                if output_terms is None:
                    output_terms = self._logits_kd(outputs, labels, teacher)
                losses[b.tag] = output_terms[OUTPUT_TERMS[(b.teacher, b.criterion)]]
                continue
            student_maps = self.capture[b.student]
            if str(b.index) in self.projections:
                student_maps = self.projections[str(b.index)](student_maps)
            teacher_maps = teacher.features[b.teacher]
            if b.criterion == "IOU":
                queries, scores, boxes = teacher.selection
                gt_boxes = [target["boxes"] for target in labels]
                losses[b.tag] = iou_masked_feature_loss(
                    student_maps, teacher_maps, queries, scores, boxes, gt_boxes, name=b.teacher
                )
            else:
                losses[b.tag] = feature_kd_loss(student_maps, teacher_maps, b.criterion, name=b.teacher)
        return losses

    def _logits_kd(self, outputs, labels: list, teacher: TeacherSignals) -> Dict[str, torch.Tensor]:
        meta = getattr(outputs, "denoising_meta_values", None)
        logits = strip_denoising(outputs.logits, meta)
        boxes = strip_denoising(outputs.pred_boxes, meta)
        pairs = self._pairs(logits, boxes, labels, teacher)
        return logits_kd_losses(logits, boxes, teacher.logits, teacher.boxes, pairs, **self.logits_kd)

    def _pairs(self, logits, boxes, labels: list, teacher: TeacherSignals) -> QueryPairs:
        if self.matching == "index":
            return index_pairs(logits.shape[0], logits.shape[1], teacher.logits.shape[1], device=logits.device)
        if self.matching == "gt":
            with torch.no_grad():
                mine = self.matcher({"logits": logits.detach().float(), "pred_boxes": boxes.detach().float()}, labels)
            return gt_pairs(mine, teacher.matches)
        sigmoid = self.logits_kd["kind"] != "softmax_kl"
        return hungarian_pairs(logits, boxes, teacher.logits, teacher.boxes, sigmoid=sigmoid)
