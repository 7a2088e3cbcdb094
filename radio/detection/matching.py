"""Which student query is distilled towards which teacher query (logits KD of DETR-family detectors).

DETR queries are an unordered set: query 7 of the student and query 7 of the teacher need not be the same
object, and the two may not even have the same number of queries. Three matchings, all returning the same
``QueryPairs``:

- ``hungarian`` (default): a one-to-one assignment minimising a class + box cost between the student's and the
  teacher's predictions (DETR's matcher with the teacher's predictions as the targets).
- ``index``: query i to query i (TAO's DINO distillation); only meaningful for equal query counts, which it
  enforces.
- ``gt``: the student and teacher queries that each model's own Hungarian matcher assigned to the same
  ground-truth object.

Boxes everywhere are normalised ``cx, cy, w, h`` in [0, 1] (transformers' ``pred_boxes``).
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torchvision.ops import box_convert, generalized_box_iou

from radio.errors import SpecError

MATCHINGS = ("hungarian", "index", "gt")  # ``distill.matching``: the pairing functions below


@dataclass
class QueryPairs:
    """Matched (student query, teacher query) pairs of a batch, flattened over images: pair p is student
    query ``student[p]`` and teacher query ``teacher[p]`` of image ``image[p]`` (int64 [P] each, on the
    predictions' device)."""

    image: torch.Tensor
    student: torch.Tensor
    teacher: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.numel())


def class_probabilities(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Per-class probabilities: independent sigmoids for focal-loss detectors (RT-DETR, Deformable DETR), a
    softmax over classes otherwise."""
    return logits.sigmoid() if sigmoid else logits.softmax(-1)


def match_costs(
    student_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_boxes: torch.Tensor,
    *,
    sigmoid: bool,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> torch.Tensor:
    """Cost of pairing each student query with each teacher query, float32 [B, Ns, Nt].

    Logits are [B, N, C], boxes [B, N, 4]. The class cost is the L1 distance between the two class
    probability vectors (not DETR's ``-p[target class]``): it is 0 for identical predictions, so a copy of the
    teacher is its own optimal assignment. The box costs are DETR's: L1 of cx,cy,w,h and -GIoU. The default
    weights are transformers' RT-DETR matcher weights (``matcher_class_cost/bbox_cost/giou_cost``).
    """
    student_probs = class_probabilities(student_logits.float(), sigmoid)
    teacher_probs = class_probabilities(teacher_logits.float(), sigmoid)
    class_cost = torch.cdist(student_probs, teacher_probs, p=1)
    l1_cost = torch.cdist(student_boxes.float(), teacher_boxes.float(), p=1)
    student_xyxy = box_convert(student_boxes.float(), "cxcywh", "xyxy")
    teacher_xyxy = box_convert(teacher_boxes.float(), "cxcywh", "xyxy")
    giou = torch.stack([generalized_box_iou(s, t) for s, t in zip(student_xyxy, teacher_xyxy)])
    return class_weight * class_cost + l1_weight * l1_cost - giou_weight * giou


def hungarian_pairs(
    student_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_boxes: torch.Tensor,
    *,
    sigmoid: bool,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> QueryPairs:
    """The minimum-cost one-to-one assignment of ``match_costs`` per image; ``min(Ns, Nt)`` pairs per image.

    The whole batch's cost matrices come to the host in one copy (one synchronisation per step, not one per
    image); scipy solves each ~300x300 assignment in about 2 ms.
    """
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        costs = match_costs(
            student_logits,
            student_boxes,
            teacher_logits,
            teacher_boxes,
            sigmoid=sigmoid,
            class_weight=class_weight,
            l1_weight=l1_weight,
            giou_weight=giou_weight,
        ).cpu()
    images, students, teachers = [], [], []
    for index, cost in enumerate(costs.numpy()):
        rows, cols = linear_sum_assignment(cost)
        images.append(torch.full((len(rows),), index, dtype=torch.long))
        students.append(torch.as_tensor(rows, dtype=torch.long))
        teachers.append(torch.as_tensor(cols, dtype=torch.long))
    device = student_logits.device
    return QueryPairs(torch.cat(images).to(device), torch.cat(students).to(device), torch.cat(teachers).to(device))


def index_pairs(batch_size: int, student_queries: int, teacher_queries: int, device=None) -> QueryPairs:
    """Query i of the student with query i of the teacher, in every image (TAO's DINO distillation)."""
    if student_queries != teacher_queries:
        raise SpecError(
            f"matching: index pairs query i of the student with query i of the teacher, so it needs equal query "
            f"counts, but the student has {student_queries} queries and the teacher {teacher_queries} (after "
            "denoising queries are stripped). Use matching: hungarian (or gt), or give both models the same "
            "num_queries."
        )
    queries = torch.arange(student_queries, device=device)
    images = torch.arange(batch_size, device=device).repeat_interleave(student_queries)
    return QueryPairs(images, queries.repeat(batch_size), queries.repeat(batch_size))


def gt_pairs(
    student_matches: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    teacher_matches: Sequence[Tuple[torch.Tensor, torch.Tensor]],
) -> QueryPairs:
    """Student and teacher queries assigned to the same ground-truth object, per image.

    Each ``*_matches[b]`` is ``(query_indices, target_indices)`` of image b, as transformers' Hungarian
    matchers (``RTDetrHungarianMatcher``, ``DeformableDetrHungarianMatcher``) return them; an object only one
    model matched gives no pair.
    """
    if len(student_matches) != len(teacher_matches):
        raise ValueError(f"{len(student_matches)} student matches for {len(teacher_matches)} teacher matches")
    images: List[torch.Tensor] = []
    students: List[torch.Tensor] = []
    teachers: List[torch.Tensor] = []
    for index, ((s_query, s_target), (t_query, t_target)) in enumerate(zip(student_matches, teacher_matches)):
        same_object = s_target.reshape(-1, 1).cpu() == t_target.reshape(1, -1).cpu()
        s_at, t_at = same_object.nonzero(as_tuple=True)
        images.append(torch.full((len(s_at),), index, dtype=torch.long))
        students.append(s_query.reshape(-1).cpu()[s_at].long())
        teachers.append(t_query.reshape(-1).cpu()[t_at].long())
    device = student_matches[0][0].device if student_matches else None
    return QueryPairs(torch.cat(images).to(device), torch.cat(students).to(device), torch.cat(teachers).to(device))
