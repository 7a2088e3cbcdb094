"""Detection distillation losses against direct computations, zero for a (query-permuted) copy of the teacher,
and denoising queries stripped from a real transformers RT-DETR."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from radio.detection.losses import (
    LOGITS_KD_KINDS,
    class_divergence,
    feature_kd_loss,
    gt_overlap_scores,
    iou_feature_mask,
    iou_masked_feature_loss,
    logits_kd_losses,
    strip_denoising,
)
from radio.detection.matching import QueryPairs, hungarian_pairs, index_pairs
from tests.detection.conftest import detection_labels, tiny_rtdetr
from tests.detection.test_matching import random_predictions


@pytest.fixture(scope="module")
def rtdetr():
    return tiny_rtdetr()


def test_denoising_queries_are_stripped_from_a_real_rtdetr(rtdetr):
    """With labels in train mode, RT-DETR prepends its denoising queries; the matching queries cannot see them
    (attention mask), so once stripped they equal the same forward without labels (no denoising)."""
    rtdetr.train()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_dn = rtdetr(pixel_values=pixels, labels=detection_labels())
        without_dn = rtdetr(pixel_values=pixels)
    num_denoising, num_queries = with_dn.denoising_meta_values["dn_num_split"]
    assert num_denoising > 0 and num_queries == rtdetr.config.num_queries
    assert with_dn.logits.shape[1] == num_denoising + num_queries
    assert without_dn.denoising_meta_values is None
    meta = with_dn.denoising_meta_values
    for name in ("logits", "pred_boxes"):
        stripped = strip_denoising(getattr(with_dn, name), meta)
        assert stripped.shape == getattr(without_dn, name).shape
        assert torch.allclose(stripped, getattr(without_dn, name), atol=1e-5)
    assert strip_denoising(with_dn.intermediate_logits, meta, dim=2).shape[2] == num_queries
    assert strip_denoising(without_dn.logits, None) is without_dn.logits
    with pytest.raises(ValueError, match="not the query axis"):
        strip_denoising(with_dn.logits, meta, dim=2)


@pytest.mark.parametrize("kind", LOGITS_KD_KINDS)
def test_class_divergence_matches_its_definition(kind):
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    temperature = 2.0
    s, t = student / temperature, teacher / temperature
    if kind == "softmax_kl":
        expected = F.kl_div(s.log_softmax(-1), t.softmax(-1), reduction="none").sum(-1)
    else:
        p, q = t.sigmoid(), s.sigmoid()
        expected = -(p * q.log() + (1 - p) * (1 - q).log()).sum(-1)
        if kind == "sigmoid_kl":
            expected = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(-1)
    assert torch.allclose(class_divergence(student, teacher, kind, temperature), expected * 4, atol=1e-5)


def test_logits_kd_losses_match_a_direct_weighted_computation():
    student_logits, student_boxes = random_predictions(2, 6, seed=1)
    teacher_logits, teacher_boxes = random_predictions(2, 6, seed=2)
    pairs = QueryPairs(torch.tensor([0, 0, 1]), torch.tensor([1, 4, 0]), torch.tensor([3, 2, 5]))
    losses = logits_kd_losses(student_logits, student_boxes, teacher_logits, teacher_boxes, pairs, kind="sigmoid_kl")
    rows = []
    for image, s, t in zip(pairs.image.tolist(), pairs.student.tolist(), pairs.teacher.tolist()):
        weight = teacher_logits[image, t].sigmoid().max()
        kl = class_divergence(student_logits[image, s][None], teacher_logits[image, t][None], "sigmoid_kl", 1.0)[0]
        l1 = (student_boxes[image, s] - teacher_boxes[image, t]).abs().sum()
        s_xyxy, t_xyxy = (
            box_convert(b[None], "cxcywh", "xyxy") for b in (student_boxes[image, s], teacher_boxes[image, t])
        )
        rows.append((weight, kl, l1, 1 - generalized_box_iou(s_xyxy, t_xyxy)[0, 0]))
    weights = torch.stack([r[0] for r in rows])
    for position, name in enumerate(("class", "box_l1", "box_giou"), start=1):
        expected = (weights * torch.stack([r[position] for r in rows])).sum() / weights.sum()
        assert torch.allclose(losses[name], expected, atol=1e-5), name
    unweighted = logits_kd_losses(
        student_logits, student_boxes, teacher_logits, teacher_boxes, pairs, confidence_weighted=False
    )
    assert torch.allclose(unweighted["box_l1"], torch.stack([r[2] for r in rows]).mean(), atol=1e-5)


@pytest.mark.parametrize("kind", ["sigmoid_kl", "softmax_kl"])
def test_a_query_permuted_copy_of_a_real_teacher_has_zero_logits_kd_under_hungarian(rtdetr, kind):
    rtdetr.eval()
    with torch.no_grad():
        teacher = rtdetr(pixel_values=torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    permutation = torch.randperm(teacher.logits.shape[1], generator=torch.Generator().manual_seed(2))
    student_logits = teacher.logits[:, permutation].clone().requires_grad_(True)
    student_boxes = teacher.pred_boxes[:, permutation].clone().requires_grad_(True)
    pairs = hungarian_pairs(student_logits, student_boxes, teacher.logits, teacher.pred_boxes, sigmoid=True)
    assert torch.equal(pairs.teacher, permutation[pairs.student])
    losses = logits_kd_losses(student_logits, student_boxes, teacher.logits, teacher.pred_boxes, pairs, kind=kind)
    for name, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), name
    # the same copy under index matching is far from the teacher: the matching is what makes it zero
    misaligned = logits_kd_losses(
        student_logits, student_boxes, teacher.logits, teacher.pred_boxes, index_pairs(2, 12, 12), kind=kind
    )
    assert misaligned["box_l1"].item() > 0.01
    sum(losses.values()).backward()
    assert student_logits.grad is not None


def test_no_pairs_give_a_zero_in_the_students_graph():
    logits, boxes = random_predictions(1, 3)
    logits.requires_grad_(True)
    empty = QueryPairs(*(torch.zeros(0, dtype=torch.long) for _ in range(3)))
    losses = logits_kd_losses(logits, boxes, logits.detach(), boxes, empty)
    assert losses["class"].item() == 0.0 and losses["class"].requires_grad


def test_feature_kd_sums_the_mean_distance_of_each_level():
    student = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    teacher = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    l1 = sum((s - t).abs().mean() for s, t in zip(student, teacher))
    l2 = sum(((s - t) ** 2).mean() for s, t in zip(student, teacher))
    assert torch.allclose(feature_kd_loss(student, teacher, "L1"), l1)
    assert torch.allclose(feature_kd_loss(student, teacher, "L2"), l2)
    assert feature_kd_loss(teacher, teacher, "L2").item() == 0.0
    with pytest.raises(ValueError, match="level 1"):
        feature_kd_loss(student, [teacher[0], torch.randn(2, 8, 4, 4)], "L1")


def test_gt_overlap_scores_compare_boxes_in_one_format():
    """A teacher query exactly on a ground-truth box keeps its full confidence (TAO's pixel-vs-normalised
    comparison would have given it ~0)."""
    scores = torch.tensor([[0.9, 0.5, 0.8]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    truth = [torch.tensor([[0.5, 0.5, 0.2, 0.2]])]
    # the second query is shifted by a quarter of its width: IoU 0.15 / 0.25 = 0.6
    expected = torch.tensor([[0.9, 0.5 * 0.6, 0.0]])
    assert torch.allclose(gt_overlap_scores(scores, boxes, truth), expected, atol=1e-5)
    assert torch.equal(gt_overlap_scores(scores, boxes, [torch.zeros(0, 4)]), scores)


def test_iou_mask_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    teacher_map = torch.randn(1, 3, 2, 2, generator=generator)
    queries = torch.randn(1, 2, 3, generator=generator)
    weights = torch.tensor([[0.7, 0.2]])
    mask = iou_feature_mask(teacher_map, queries, weights)
    expected = torch.zeros(2, 2)
    for y in range(2):
        for x in range(2):
            pixel = teacher_map[0, :, y, x]
            expected[y, x] = max(
                1e-2, sum(weights[0, n] * F.cosine_similarity(queries[0, n], pixel, dim=0) for n in range(2))
            )
    assert torch.allclose(mask[0, 0], expected / expected.max(), atol=1e-5)
    with pytest.raises(ValueError, match="width 3 with a teacher map of width 4"):
        iou_feature_mask(torch.randn(1, 4, 2, 2), queries, weights)


def test_iou_masked_loss_is_zero_for_the_teachers_own_maps_and_masked_mse_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 8, 4, 4, generator=generator), torch.randn(2, 8, 2, 2, generator=generator)]
    student = [torch.randn(2, 8, 4, 4, generator=generator), torch.randn(2, 8, 2, 2, generator=generator)]
    queries = torch.randn(2, 5, 8, generator=generator)
    scores, boxes = torch.rand(2, 5, generator=generator), torch.rand(2, 5, 4, generator=generator) * 0.5 + 0.25
    truth = [torch.tensor([[0.5, 0.5, 0.3, 0.3]]), torch.zeros(0, 4)]
    assert iou_masked_feature_loss(teacher, teacher, queries, scores, boxes, truth).item() == 0.0
    weights = gt_overlap_scores(scores, boxes, truth)
    expected = sum((((iou_feature_mask(t, queries, weights) * (s - t)) ** 2).mean()) for s, t in zip(student, teacher))
    loss = iou_masked_feature_loss(student, teacher, queries, scores, boxes, truth)
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)


def test_iou_criterion_on_a_real_rtdetr_is_zero_for_the_teacher_itself_and_positive_for_another_model(rtdetr):
    from radio.detection.features import FeatureCapture, rtdetr_query_selection

    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    truth = [label["boxes"] for label in detection_labels()]

    def srcs_and_queries(model):
        with FeatureCapture(model, ["srcs", "enc_output"]) as capture, torch.no_grad():
            outputs = model.eval()(pixel_values=pixels)
            return capture["srcs"], rtdetr_query_selection(outputs, capture["enc_output"][0])

    teacher_srcs, (queries, scores, boxes) = srcs_and_queries(rtdetr)
    other_srcs, _ = srcs_and_queries(tiny_rtdetr(seed=5))
    assert iou_masked_feature_loss(teacher_srcs, teacher_srcs, queries, scores, boxes, truth).item() == 0.0
    assert iou_masked_feature_loss(other_srcs, teacher_srcs, queries, scores, boxes, truth).item() > 0.0
