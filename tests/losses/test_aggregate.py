"""Multi-teacher aggregation and single-teacher classification KD."""

import math

import numpy as np
import pytest
import torch

from radio.losses.aggregate import aggregate_teacher_losses, label_cross_entropy


def test_total_is_lambda_weighted_mean_over_configured_teachers():
    losses = {"dino": torch.tensor(2.0), "siglip": torch.tensor(0.5), "sam": torch.tensor(4.0)}
    lambdas = {"dino": 1.0, "siglip": 0.5, "sam": 0.25}
    total, skipped = aggregate_teacher_losses(losses, lambdas)
    assert skipped.tolist() == [False, False, False]
    assert total.item() == pytest.approx((1.0 * 2.0 + 0.5 * 0.5 + 0.25 * 4.0) / 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_terms_are_skipped_and_n_stays_the_teacher_count(bad):
    a = torch.tensor(3.0, requires_grad=True)
    losses = {"a": a * 1.0, "b": torch.tensor(bad)}
    total, skipped = aggregate_teacher_losses(losses, {"a": 2.0, "b": 1.0})
    assert skipped.tolist() == [False, True]
    assert total.item() == pytest.approx(2.0 * 3.0 / 2)
    total.backward()
    assert a.grad.item() == pytest.approx(1.0)


def test_an_invalid_term_gets_exactly_zero_gradient():
    a, b = torch.tensor(3.0, requires_grad=True), torch.tensor(5.0, requires_grad=True)
    total, skipped = aggregate_teacher_losses(
        {"a": a * 1.0, "b": b * 2.0}, {"a": 1.0, "b": 1.0}, valid={"b": torch.tensor(False)}
    )
    assert skipped.tolist() == [False, True] and total.item() == pytest.approx(1.5)
    total.backward()
    assert a.grad.item() == pytest.approx(0.5) and b.grad.item() == 0.0


def test_when_no_term_counts_the_gradients_are_nan_so_the_step_is_skipped():
    a, b = torch.tensor(3.0, requires_grad=True), torch.tensor(5.0, requires_grad=True)
    no = torch.tensor(False)
    total, skipped = aggregate_teacher_losses({"a": a * 1.0, "b": b * 1.0}, {"a": 1.0, "b": 1.0}, {"a": no, "b": no})
    assert skipped.tolist() == [True, True] and math.isnan(total.item())
    total.backward()
    assert math.isnan(a.grad.item()) and math.isnan(b.grad.item())


def test_every_term_non_finite_gives_a_nan_total():
    total, skipped = aggregate_teacher_losses({"a": torch.tensor(float("nan"))}, {"a": 1.0})
    assert skipped.tolist() == [True] and math.isnan(total.item())


def test_missing_lambda_is_an_error():
    with pytest.raises(KeyError, match="b"):
        aggregate_teacher_losses({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}, {"a": 1.0})


def _np_ce(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def test_label_cross_entropy_golden():
    rs = np.random.RandomState(5)  # logits [4, 6]
    logits = rs.randn(4, 6) * 2
    labels = np.array([2, 0, 5, -1])  # the last sample has no label
    ce = _np_ce(logits[:3], labels[:3]).mean()
    got = label_cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels))
    assert got.item() == pytest.approx(ce, rel=1e-6)


def test_label_cross_entropy_without_labels_is_zero():
    assert label_cross_entropy(torch.randn(3, 5), torch.full((3,), -1)).item() == 0.0
