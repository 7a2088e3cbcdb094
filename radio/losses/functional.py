"""Loss functions of docs/losses.md on plain tensors.

Feature losses are computed per row (a token, a summary vector or a logit vector) and reduced with an
optional per-row weight, so that masked-out tokens contribute nothing in every loss type. Logit losses
(KL, CE) follow Hinton et al.: both distributions are softened by the temperature T and the result is
multiplied by T², so gradient magnitudes do not shrink as T grows; at T = 1 they are the plain KL / soft
cross entropy.
"""

from typing import Optional

import torch
import torch.nn.functional as F

FD_BETA = 2.0  # smooth-L1 transition point of the FD loss (docs/losses.md)
BALANCED_CS_WEIGHT = 0.9
BALANCED_FD_WEIGHT = 0.1


def per_row_loss(loss_type: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise feature loss of one canonical type, averaged over the last (channel) dim.

    pred, target: [N, C]. Returns [N]. L1: mean |d|; L2 / MSE: mean d²; FD: mean smooth-L1 with β=2;
    CS: 1 − cosine(pred, target); BALANCED: 0.9·CS + 0.1·FD.
    """
    if loss_type == "L1":
        return (pred - target).abs().mean(-1)
    if loss_type in ("L2", "MSE"):
        return (pred - target).pow(2).mean(-1)
    if loss_type == "FD":
        return F.smooth_l1_loss(pred, target, beta=FD_BETA, reduction="none").mean(-1)
    if loss_type == "CS":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1)
    if loss_type == "BALANCED":
        return BALANCED_CS_WEIGHT * per_row_loss("CS", pred, target) + BALANCED_FD_WEIGHT * per_row_loss(
            "FD", pred, target
        )
    raise ValueError(f"{loss_type!r} is not an element-wise feature loss")


def weighted_mean(values: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``values`` [N] over rows with ``weight`` [N] (0 = excluded); 0 when nothing is valid."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


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


def vector_loss(
    loss_type: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Any canonical loss type on row vectors pred, target [N, C], averaged over rows (weight [N]).

    KL and CE treat the rows as logits at ``temperature`` (batch mean of the per-row divergence); the
    others are ``per_row_loss``. Returns a scalar.
    """
    if loss_type == "KL":
        rows = kl_div_rows(pred, target, temperature)
    elif loss_type == "CE":
        rows = soft_cross_entropy_rows(pred, target, temperature)
    else:
        rows = per_row_loss(loss_type, pred, target)
    return weighted_mean(rows, weight)
