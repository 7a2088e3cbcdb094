"""Student↔teacher query matching: hungarian recovers a permutation, index refuses unequal counts, gt pairs
queries through the ground-truth object they share."""

import pytest
import torch

from radio.detection.matching import gt_pairs, hungarian_pairs, index_pairs, match_costs
from radio.errors import SpecError


def random_predictions(batch: int, queries: int, classes: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, queries, classes, generator=generator) * 3
    centres = torch.rand(batch, queries, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(batch, queries, 2, generator=generator) * 0.3 + 0.05
    return logits, torch.cat([centres, sizes], -1)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_hungarian_recovers_a_query_permutation_exactly(sigmoid):
    logits, boxes = random_predictions(3, 30)
    permutations = torch.stack([torch.randperm(30, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    rows = torch.arange(3)[:, None]
    pairs = hungarian_pairs(logits[rows, permutations], boxes[rows, permutations], logits, boxes, sigmoid=sigmoid)
    assert len(pairs) == 90
    assert torch.equal(pairs.teacher, permutations[pairs.image, pairs.student])


def test_hungarian_with_fewer_student_queries_pairs_each_once():
    student_logits, student_boxes = random_predictions(2, 5, seed=1)
    teacher_logits, teacher_boxes = random_predictions(2, 8, seed=2)
    pairs = hungarian_pairs(student_logits, student_boxes, teacher_logits, teacher_boxes, sigmoid=True)
    for image in range(2):
        chosen = pairs.image == image
        assert sorted(pairs.student[chosen].tolist()) == list(range(5))
        assert len(set(pairs.teacher[chosen].tolist())) == 5


def test_match_costs_is_zero_class_and_box_distance_for_identical_queries():
    logits, boxes = random_predictions(1, 6)
    costs = match_costs(logits, boxes, logits, boxes, sigmoid=True, class_weight=2.0, l1_weight=5.0, giou_weight=2.0)
    # identical queries: class and L1 costs 0, GIoU 1 -> cost -giou_weight on the diagonal, the row minimum
    assert torch.allclose(costs[0].diagonal(), torch.full((6,), -2.0), atol=1e-5)
    assert torch.equal(costs[0].argmin(-1), torch.arange(6))


def test_index_pairs_query_i_with_query_i():
    pairs = index_pairs(2, 4, 4)
    assert pairs.image.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(pairs.student, pairs.teacher)
    assert pairs.student.tolist() == [0, 1, 2, 3] * 2


def test_index_refuses_unequal_query_counts():
    with pytest.raises(SpecError, match="300 queries and the teacher 900"):
        index_pairs(2, 300, 900)


def test_gt_pairs_queries_matched_to_the_same_object():
    student = [(torch.tensor([4, 1, 7]), torch.tensor([0, 1, 2])), (torch.tensor([3]), torch.tensor([0]))]
    teacher = [(torch.tensor([9, 2]), torch.tensor([2, 0])), (torch.tensor([5]), torch.tensor([1]))]
    pairs = gt_pairs(student, teacher)
    # image 0: object 0 -> (4, 2), object 2 -> (7, 9), object 1 only the student matched; image 1: none shared
    assert sorted(zip(pairs.image.tolist(), pairs.student.tolist(), pairs.teacher.tolist())) == [(0, 4, 2), (0, 7, 9)]
