"""Loss functions of docs/losses.md on plain tensors.

Every loss is computed per row (a token, a summary vector or a logit vector), then averaged over the
rows. Logit losses (KL, CE) follow Hinton et al.: both distributions are softened by the temperature T
and the result is multiplied by T², so gradient magnitudes do not shrink as T grows; at T = 1 they are
the plain KL / soft cross entropy.
"""

from typing import Callable, Dict

import torch
import torch.nn.functional as F

FD_BETA = 2.0  # smooth-L1 transition point of the FD loss (docs/losses.md)
BALANCED_CS_WEIGHT = 0.9
BALANCED_FD_WEIGHT = 0.1

RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # pred [N, C], target [N, C] -> [N]


def _l1_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean(-1)


def _l2_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).mean(-1)


def _fd_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(pred, target, beta=FD_BETA, reduction="none").mean(-1)


def _cs_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(pred, target, dim=-1)


def _balanced_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return BALANCED_CS_WEIGHT * _cs_rows(pred, target) + BALANCED_FD_WEIGHT * _fd_rows(pred, target)


# The element-wise feature losses, keyed by their names in radio/losses/names.py (LOSS_TYPES minus
# LOGITS_ONLY_LOSS_TYPES, which are in LOGIT_ROW_LOSSES below).
ELEMENTWISE_ROW_LOSSES: Dict[str, RowLoss] = {
    "L1": _l1_rows,
    "L2": _l2_rows,
    "MSE": _l2_rows,
    "FD": _fd_rows,
    "CS": _cs_rows,
    "BALANCED": _balanced_rows,
}


def per_row_loss(loss_type: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise feature loss of one canonical type, averaged over the last (channel) dim.

    pred, target: [N, C]. Returns [N]. L1: mean |d|; L2 / MSE: mean d²; FD: mean smooth-L1 with β=2;
    CS: 1 − cosine(pred, target); BALANCED: 0.9·CS + 0.1·FD.
    """
    if loss_type not in ELEMENTWISE_ROW_LOSSES:
        raise ValueError(
            f"{loss_type!r} is not an element-wise feature loss; valid: {', '.join(ELEMENTWISE_ROW_LOSSES)}"
        )
    return ELEMENTWISE_ROW_LOSSES[loss_type](pred, target)


def kl_div_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) per row, summed over classes.

    student_logits, teacher_logits: [N, K]. Returns [N].
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * temperature**2


def soft_cross_entropy_rows(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """T² · H(softmax(t/T), softmax(s/T)) = −T² Σ_k p_t log p_s per row.

    student_logits, teacher_logits: [N, K]. Returns [N]. Differs from ``kl_div_rows`` by the teacher's
    entropy, a constant for the student, so the gradients are identical.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    return -(p_t * log_p_s).sum(-1) * temperature**2


# The losses on class distributions, keyed like names.LOGITS_ONLY_LOSS_TYPES.
LOGIT_ROW_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "KL": kl_div_rows,
    "CE": soft_cross_entropy_rows,
}


def vector_loss(loss_type: str, pred: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Any canonical loss type on row vectors pred, target [N, C], averaged over rows. Returns a scalar.

    KL and CE treat the rows as logits at ``temperature`` (batch mean of the per-row divergence); the
    others are ``per_row_loss``.
    """
    if loss_type in LOGIT_ROW_LOSSES:
        return LOGIT_ROW_LOSSES[loss_type](pred, target, temperature).mean()
    return per_row_loss(loss_type, pred, target).mean()
