"""Golden values: every loss on fixed inputs against an independent float64 NumPy implementation.

Inputs come from ``numpy.random.RandomState`` (its legacy stream is frozen across NumPy versions) with
the seeds below. ``GOLDEN`` holds the numbers the NumPy reference produced once for those inputs; the
tests check that the reference still reproduces them (so the inputs and the reference are pinned) and that
radio's torch implementation matches them.

KL / CE convention: Hinton's, T² · KL(softmax(t/T) ‖ softmax(s/T)) and −T² Σ softmax(t/T) log softmax(s/T),
summed over classes and averaged over rows.
"""

import numpy as np
import pytest
import torch

from radio.losses.criterion import TeacherCriterion
from radio.losses.functional import vector_loss

ROW_SEED = 20261126  # pred/target rows [6, 5]
MAP_SEED = 7  # spatial maps [2, 4, 3, 3]
SUMMARY_SEED = 11  # summary vectors [5, 8]


def _rows():
    rs = np.random.RandomState(ROW_SEED)
    pred = rs.randn(6, 5) * 2.0  # scale 2 so that FD's |d| < β and |d| > β regimes both occur
    target = rs.randn(6, 5) * 2.0 + 0.5
    return pred, target


def _maps():
    rs = np.random.RandomState(MAP_SEED)
    pred = rs.randn(2, 4, 3, 3)
    target = rs.randn(2, 4, 3, 3) * 1.5
    return pred, target


def _summaries():
    rs = np.random.RandomState(SUMMARY_SEED)
    pred = rs.randn(5, 8)
    target = rs.randn(5, 8) * 3.0 + 1.0
    return pred, target


# -- independent NumPy float64 reference ------------------------------------------------------------------
def _log_softmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ref_rows(loss, s, t, temperature=1.0):
    """Per-row loss [N] of one loss type."""
    d = s - t
    if loss == "KL":
        ls, lt = _log_softmax(s / temperature), _log_softmax(t / temperature)
        return (np.exp(lt) * (lt - ls)).sum(-1) * temperature**2
    if loss == "CE":
        ls, lt = _log_softmax(s / temperature), _log_softmax(t / temperature)
        return -(np.exp(lt) * ls).sum(-1) * temperature**2
    if loss == "L1":
        return np.abs(d).mean(-1)
    if loss in ("L2", "MSE"):
        return (d**2).mean(-1)
    if loss == "FD":
        a = np.abs(d)
        return np.where(a < 2.0, 0.5 * d**2 / 2.0, a - 1.0).mean(-1)
    if loss == "CS":
        return 1.0 - (s * t).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
    if loss == "BALANCED":
        return 0.9 * ref_rows("CS", s, t) + 0.1 * ref_rows("FD", s, t)
    raise AssertionError(loss)


def ref_layer_norm(t):
    return (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_summary(kind, s, t, temperature=1.0):
    t = ref_layer_norm(t)
    if kind == "cosine":
        return ref_rows("CS", s, t).mean()
    if kind == "ce":
        return ref_rows("CE", s, t, temperature).mean()
    su, tu = _unit(s), _unit(t)
    m = _unit(tu.sum(0))
    var = (np.arccos(tu @ m) ** 2).mean()  # teacher's angular variance around its mean direction
    if kind == "angle":
        return (np.arccos((su * tu).sum(-1)) ** 2).mean() / var

    def log_map(x):
        c = x @ m
        th = np.arccos(c)
        return (x - c[:, None] * m) * (th / np.sin(th))[:, None]

    return ((log_map(su) - log_map(tu)) ** 2).sum(-1).mean() / var


def ref_spatial(loss, s, t):
    rows_s = s.transpose(0, 2, 3, 1).reshape(-1, s.shape[1])
    rows_t = t.transpose(0, 2, 3, 1).reshape(-1, t.shape[1])
    return ref_rows(loss, rows_s, rows_t).mean()


# Produced by the reference above on the seeded inputs (float64), 2026-11-26.
GOLDEN_ROWS = {  # (loss type, temperature) -> mean over the 6 rows of _rows()
    ("KL", 1.0): 1.5886736224199745,
    ("KL", 2.0): 1.8706632923107331,
    ("CE", 1.0): 2.7759667805044743,
    ("CE", 2.0): 7.635889514773596,
    ("L1", 1.0): 2.7346623023025387,
    ("L2", 1.0): 10.127562224367878,
    ("MSE", 1.0): 10.127562224367878,
    ("FD", 1.0): 1.8526540217192846,
    ("CS", 1.0): 1.201484077459508,
    ("BALANCED", 1.0): 1.2666010718854859,
}
GOLDEN_SPATIAL = {  # loss type -> mean over the 18 tokens of _maps() (produced 2026-12-01)
    "L1": 1.4398449698995577,
    "L2": 3.072827985026061,
    "MSE": 3.072827985026061,
    "FD": 0.6907869193610365,
    "CS": 1.1479789423781568,
    "BALANCED": 1.1022597400764447,
}
GOLDEN_SUMMARY = {  # (summary loss type, temperature) -> loss on _summaries(), first (training) batch
    ("cosine", 1.0): 1.1421964994516398,
    ("angle", 1.0): 2.4165196858306146,
    ("ce", 1.0): 2.434605046844737,
    ("ce", 2.0): 8.739643974845373,
    ("tangent_sphere", 1.0): 3.788898254426977,
}
GOLDEN_SUMMARY_ELEMENTWISE = {  # loss type in summary mode -> loss on _summaries() (LayerNormed target)
    "L1": 1.209173530868669,
    "FD": 0.5054231491871357,
    "BALANCED": 1.0785191644251895,
}


def _torch(x, dtype=torch.float64):
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def test_inputs_exercise_both_fd_regimes():
    pred, target = _rows()
    d = np.abs(pred - target)
    assert (d < 2.0).any() and (d >= 2.0).any()


@pytest.mark.parametrize("loss, temperature", sorted(GOLDEN_ROWS))
def test_row_losses(loss, temperature):
    pred, target = _rows()
    expected = GOLDEN_ROWS[(loss, temperature)]
    assert ref_rows(loss, pred, target, temperature).mean() == pytest.approx(expected, rel=1e-12)
    got = vector_loss(loss, _torch(pred), _torch(target), temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss, temperature", sorted(GOLDEN_ROWS))
def test_logits_mode_criterion(loss, temperature):
    pred, target = _rows()
    criterion = TeacherCriterion("logits", loss.lower(), temperature=temperature)
    out = criterion({"logits": _torch(pred, torch.float32)}, {"logits": _torch(target, torch.float32)})
    assert set(out) == {"total", "logits"}
    assert out["total"].item() == pytest.approx(GOLDEN_ROWS[(loss, temperature)], rel=2e-6)


@pytest.mark.parametrize("loss", sorted(GOLDEN_SPATIAL))
def test_spatial_losses(loss):
    pred, target = _maps()
    expected = GOLDEN_SPATIAL[loss]
    assert ref_spatial(loss, pred, target) == pytest.approx(expected, rel=1e-12)
    criterion = TeacherCriterion("spatial", loss)
    out = criterion({"spatial": _torch(pred, torch.float32)}, {"spatial": _torch(target, torch.float32)})
    assert set(out) == {"total", "spatial"}
    assert out["total"].item() == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize("kind, temperature", sorted(GOLDEN_SUMMARY))
def test_summary_losses(kind, temperature):
    pred, target = _summaries()
    expected = GOLDEN_SUMMARY[(kind, temperature)]
    assert ref_summary(kind, pred, target, temperature) == pytest.approx(expected, rel=1e-12)
    criterion = TeacherCriterion("summary", "CS", summary_loss_type=kind, temperature=temperature)
    out = criterion({"summary": _torch(pred, torch.float32)}, {"summary": _torch(target, torch.float32)})
    assert set(out) == {"total", "summary"}
    assert out["total"].item() == pytest.approx(expected, rel=2e-5)


@pytest.mark.parametrize("loss", sorted(GOLDEN_SUMMARY_ELEMENTWISE))
def test_summary_mode_with_elementwise_loss_type(loss):
    pred, target = _summaries()
    expected = GOLDEN_SUMMARY_ELEMENTWISE[loss]
    assert ref_rows(loss, pred, ref_layer_norm(target)).mean() == pytest.approx(expected, rel=1e-12)
    criterion = TeacherCriterion("summary", loss, summary_loss_type="angle")  # angle is not used here
    out = criterion({"summary": _torch(pred, torch.float32)}, {"summary": _torch(target, torch.float32)})
    assert out["total"].item() == pytest.approx(expected, rel=2e-6)


def test_combo_weights_the_two_golden_terms():
    sp, st = _summaries()
    mp, mt = _maps()
    criterion = TeacherCriterion(
        "combo", "FD", summary_loss_type="cosine", summary_loss_weight=0.25, spatial_loss_weight=3.0
    )
    out = criterion(
        {"summary": _torch(sp, torch.float32), "spatial": _torch(mp, torch.float32)},
        {"summary": _torch(st, torch.float32), "spatial": _torch(mt, torch.float32)},
    )
    assert out["summary"].item() == pytest.approx(GOLDEN_SUMMARY[("cosine", 1.0)], rel=2e-6)
    assert out["spatial"].item() == pytest.approx(GOLDEN_SPATIAL["FD"], rel=2e-6)
    expected = 0.25 * GOLDEN_SUMMARY[("cosine", 1.0)] + 3.0 * GOLDEN_SPATIAL["FD"]
    assert out["total"].item() == pytest.approx(expected, rel=2e-6)
