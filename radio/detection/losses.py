"""Detection distillation losses: logits KD on matched query pairs and feature KD on captured maps.

Every function returns an unweighted loss: the caller forms ``distillation_loss_coef * sum(weight * loss)``
once (TAO applies its binding weights twice and never applies ``distillation_loss_coef``; docs/detection.md).
Teacher tensors are expected without autograd (the teacher runs under ``torch.no_grad``); they are detached
here anyway so a loss never back-propagates into the teacher.

Box format: every box here is normalised ``cx, cy, w, h`` in [0, 1] — transformers' ``pred_boxes``,
``enc_topk_bboxes`` and the ``labels[i]["boxes"]`` its detectors train on — converted to ``x0, y0, x1, y1``
(still normalised) only inside the IoU computations, on both sides alike.
"""

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from radio.detection.matching import QueryPairs

LOGITS_KD_KINDS = ("sigmoid_kl", "sigmoid_bce", "softmax_kl")


def strip_denoising(tensor: torch.Tensor, denoising_meta_values: Optional[Mapping], dim: int = 1) -> torch.Tensor:
    """The matching queries of an RT-DETR-family output, without its denoising queries.

    In train mode with labels, transformers' RT-DETR / RT-DETRv2 / D-FINE put the contrastive denoising queries
    first along the query axis: ``denoising_meta_values["dn_num_split"] == [num_denoising, num_queries]``.
    ``None`` (eval mode, no labels, a detector without denoising) returns ``tensor`` unchanged. ``dim`` is the
    query axis: 1 for ``logits``/``pred_boxes`` [B, N, ...], 2 for ``intermediate_logits`` [B, layers, N, ...].
    """
    if denoising_meta_values is None:
        return tensor
    num_denoising, num_queries = (int(v) for v in denoising_meta_values["dn_num_split"])
    if tensor.shape[dim] != num_denoising + num_queries:
        raise ValueError(
            f"dim {dim} of a {tuple(tensor.shape)} tensor is not the query axis of dn_num_split "
            f"[{num_denoising}, {num_queries}]"
        )
    return tensor.narrow(dim, num_denoising, num_queries)


def class_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float):
    """Per-query divergence of the student's classes from the teacher's, [P] from logits [P, C], scaled by T²
    (so the gradient's size does not shrink with the temperature, as in Hinton et al.).

    - ``sigmoid_kl``: the binary KL of each class's sigmoid at temperature T, summed over classes: the
      semantics of a sigmoid focal-loss detector (RT-DETR, Deformable DETR), 0 when the logits agree.
    - ``sigmoid_bce``: binary cross-entropy against the teacher's sigmoids: ``sigmoid_kl`` plus the teacher's
      entropy, so the same gradient with a constant offset.
    - ``softmax_kl``: KL of the softmax over classes at temperature T (TAO's DINO criterion at T = 1).
    """
    student = student_logits.float() / temperature
    teacher = teacher_logits.detach().float() / temperature
    if kind == "softmax_kl":
        divergence = (teacher.softmax(-1) * (teacher.log_softmax(-1) - student.log_softmax(-1))).sum(-1)
    elif kind in ("sigmoid_kl", "sigmoid_bce"):
        target = teacher.sigmoid()
        divergence = F.binary_cross_entropy_with_logits(student, target, reduction="none").sum(-1)
        if kind == "sigmoid_kl":
            divergence = divergence - F.binary_cross_entropy_with_logits(teacher, target, reduction="none").sum(-1)
    else:
        raise ValueError(f"unknown logits KD kind {kind!r}; known: {', '.join(LOGITS_KD_KINDS)}")
    return divergence * temperature**2


def teacher_confidence(teacher_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The teacher's top class probability per query, [P] from [P, C]: a background query of a sigmoid
    detector has every class near 0 and so teaches little."""
    logits = teacher_logits.detach().float()
    probs = logits.softmax(-1) if kind == "softmax_kl" else logits.sigmoid()
    return probs.max(-1).values


def logits_kd_losses(
    student_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_boxes: torch.Tensor,
    pairs: QueryPairs,
    *,
    kind: str = "sigmoid_kl",
    temperature: float = 1.0,
    confidence_weighted: bool = True,
) -> Dict[str, torch.Tensor]:
    """``{"class", "box_l1", "box_giou"}``: the mean over matched pairs of the class divergence, the L1 of
    cx,cy,w,h (summed over the 4) and ``1 - GIoU``, each pair weighted by ``teacher_confidence`` when
    ``confidence_weighted`` (a weighted mean: Σ w·loss / Σ w).

    Logits are [B, N, C] and boxes [B, N, 4] with denoising queries already stripped (``strip_denoising``);
    student and teacher may have different query counts — ``pairs`` says who is matched with whom.
    Without pairs every loss is a zero that still belongs to the student's graph.
    """
    if len(pairs) == 0:
        zero = (student_logits.sum() + student_boxes.sum()) * 0.0
        return {"class": zero, "box_l1": zero, "box_giou": zero}
    s_logits = student_logits[pairs.image, pairs.student]
    t_logits = teacher_logits[pairs.image, pairs.teacher].detach()
    s_boxes = student_boxes[pairs.image, pairs.student].float()
    t_boxes = teacher_boxes[pairs.image, pairs.teacher].detach().float()
    if confidence_weighted:
        weights = teacher_confidence(t_logits, kind)
    else:
        weights = torch.ones(len(pairs), device=s_logits.device)
    total = weights.sum().clamp_min(1e-6)
    l1 = (s_boxes - t_boxes).abs().sum(-1)
    giou = generalized_box_iou_loss(
        box_convert(s_boxes, "cxcywh", "xyxy"), box_convert(t_boxes, "cxcywh", "xyxy"), reduction="none", eps=1e-9
    )  # torchvision's default eps (1e-7) leaves ~1e-4 on identical boxes of an untrained model's ~1e-3 area
    return {
        "class": (weights * class_divergence(s_logits, t_logits, kind, temperature)).sum() / total,
        "box_l1": (weights * l1).sum() / total,
        "box_giou": (weights * giou).sum() / total,
    }


def check_feature_levels(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], name: str):
    """Raise unless both sides hold the same number of levels with the same shapes (after projection)."""
    if len(student_maps) != len(teacher_maps):
        raise ValueError(
            f"feature {name!r}: the student has {len(student_maps)} levels, the teacher {len(teacher_maps)}"
        )
    for level, (student, teacher) in enumerate(zip(student_maps, teacher_maps)):
        if student.shape != teacher.shape:
            raise ValueError(
                f"feature {name!r} level {level}: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; "
                "widths are matched by a FeatureProjection, spatial sizes need the same input size and strides"
            )


def feature_kd_loss(
    student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], criterion: str, name: str = "feature"
) -> torch.Tensor:
    """``L1`` (mean absolute) or ``L2`` (mean squared) difference per level, summed over levels (as TAO sums
    its IOU binding over levels). Maps are [B, C, H, W] or tokens [B, L, C], projected to the teacher's width."""
    check_feature_levels(student_maps, teacher_maps, name)
    if criterion not in ("L1", "L2"):
        raise ValueError(f"unknown feature criterion {criterion!r} here; known: L1, L2 (IOU: iou_masked_feature_loss)")
    distance = F.l1_loss if criterion == "L1" else F.mse_loss
    return sum(distance(s.float(), t.detach().float()) for s, t in zip(student_maps, teacher_maps))


def gt_overlap_scores(
    query_scores: torch.Tensor, query_boxes: torch.Tensor, gt_boxes: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Each teacher query's confidence times its best IoU with a ground-truth box of its image, [B, N].

    ``query_scores`` [B, N], ``query_boxes`` [B, N, 4] and ``gt_boxes[b]`` [G_b, 4] are all normalised
    cx,cy,w,h (TAO compared pixel x0,y0,x1,y1 queries with normalised cx,cy,w,h ground truth). An image
    without objects keeps the bare confidences (as TAO does).
    """
    rows = []
    for scores, boxes, truth in zip(query_scores, query_boxes, gt_boxes):
        if len(truth) == 0:
            rows.append(scores)
            continue
        ious = box_iou(box_convert(boxes.float(), "cxcywh", "xyxy"), box_convert(truth.float(), "cxcywh", "xyxy"))
        rows.append(scores * ious.max(-1).values)
    return torch.stack(rows)


def iou_feature_mask(teacher_map: torch.Tensor, queries: torch.Tensor, query_weights: torch.Tensor) -> torch.Tensor:
    """TAO's IOU mask of one level, [B, 1, H, W] in (0, 1]: how much each location looks like the teacher's
    confident, ground-truth-overlapping queries.

    The cosine similarity of each query [B, N, C] with each location of ``teacher_map`` [B, C, H, W], summed
    over queries with ``query_weights`` [B, N], floored at 0.01 and divided by its per-image maximum.
    """
    if queries.shape[-1] != teacher_map.shape[1]:
        raise ValueError(
            f"the IOU mask compares queries of width {queries.shape[-1]} with a teacher map of width "
            f"{teacher_map.shape[1]}: distil a feature of the decoder's width (RT-DETR's srcs when "
            "encoder_hidden_dim == d_model)"
        )
    similarity = torch.einsum(
        "bnc,bchw->bnhw", F.normalize(queries.float(), dim=-1), F.normalize(teacher_map.float(), dim=1)
    )
    mask = torch.einsum("bnhw,bn->bhw", similarity, query_weights.float()).clamp(min=1e-2)
    mask = mask / mask.flatten(1).max(-1).values[:, None, None]
    return mask.unsqueeze(1)


def iou_masked_feature_loss(
    student_maps: Sequence[torch.Tensor],
    teacher_maps: Sequence[torch.Tensor],
    queries: torch.Tensor,
    query_scores: torch.Tensor,
    query_boxes: torch.Tensor,
    gt_boxes: Sequence[torch.Tensor],
    name: str = "srcs",
) -> torch.Tensor:
    """TAO's ``IOU`` criterion: per level, the mean squared difference of ``mask * teacher`` and
    ``mask * student`` with ``iou_feature_mask`` weighted by ``gt_overlap_scores``; summed over levels.

    ``queries``, ``query_scores`` and ``query_boxes`` are the teacher's selected queries
    (``features.rtdetr_query_selection``); maps are [B, C, H, W], the student's projected to the teacher's width.
    """
    check_feature_levels(student_maps, teacher_maps, name)
    with torch.no_grad():
        weights = gt_overlap_scores(query_scores.detach(), query_boxes.detach(), gt_boxes)
        masks = [iou_feature_mask(t.detach(), queries.detach(), weights) for t in teacher_maps]
    return sum(
        F.mse_loss(mask * s.float(), mask * t.detach().float()) for mask, s, t in zip(masks, student_maps, teacher_maps)
    )
