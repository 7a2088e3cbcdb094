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
MAP_SEED = 7  # spatial maps [2, 4, 3, 3] and mask
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
    mask = rs.rand(2, 3, 3) > 0.3
    return pred, target, mask


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


def ref_spatial(loss, s, t, mask):
    rows_s = s.transpose(0, 2, 3, 1).reshape(-1, s.shape[1])
    rows_t = t.transpose(0, 2, 3, 1).reshape(-1, t.shape[1])
    keep = mask.reshape(-1)
    return ref_rows(loss, rows_s[keep], rows_t[keep]).mean()


GOLDEN = {
    "rows": {},
    "spatial_masked": {},
    "summary": {},
}


def _torch(x, dtype=torch.float64):
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
