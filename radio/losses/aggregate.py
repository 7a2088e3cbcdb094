"""Combining per-teacher losses into the training objective (docs/architecture.md, "losses")."""

from typing import Mapping, Optional, Tuple

import torch
import torch.nn.functional as F


def aggregate_teacher_losses(
    losses: Mapping[str, torch.Tensor],
    lambdas: Mapping[str, float],
    valid: Optional[Mapping[str, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Total = Σ_i λ_i / N · L_i over the teachers whose term counts, decided on the device (no host sync).

    losses: teacher name -> scalar loss; lambdas: teacher name -> ``loss_lambda``; valid: teacher name ->
    bool scalar, False when the term must not count (its targets were non-finite). A term counts when it is
    finite and valid. N is the number of configured teachers (``len(losses)``) and stays so when terms are
    left out: such a teacher contributes nothing this step, the others keep their usual weight.

    A left-out term stays in the graph with weight 0, so its gradients are exactly 0 as long as its own
    inputs are finite — which is why the objective replaces non-finite targets before computing terms
    (``engine/objective.py``). A non-finite term from the student's side therefore makes the gradients
    non-finite, and when no term counts the total and its gradients are NaN: either way the engine's
    non-finite-step rule skips the step on every rank. Returns (total, skipped: bool [N] in ``losses``'
    order).
    """
    if not losses:
        raise ValueError("aggregate_teacher_losses needs at least one teacher loss")
    missing = sorted(set(losses) - set(lambdas))
    if missing:
        raise KeyError(f"no loss_lambda for teacher(s) {missing}")
    n = len(losses)
    counted, total, finite_terms = [], 0.0, 0.0
    for name, value in losses.items():
        finite = torch.isfinite(value.detach())
        ok = finite & valid[name] if valid is not None and name in valid else finite
        weighted = value * (float(lambdas[name]) / n)
        zero = torch.zeros_like(weighted)
        total = total + torch.where(ok, weighted, zero)
        finite_terms = finite_terms + torch.where(finite, weighted, zero)
        counted.append(ok)
    counted_t = torch.stack(counted)
    # No term counts: the total must be NaN *with* NaN gradients, so that the step is skipped, but every
    # masked term passes back exact zeros. So NaN · (the finite terms) is added then, and 0 · them otherwise
    # (exactly zero, value and gradients).
    poison = torch.where(counted_t.any(), 0.0, float("nan")).to(total.dtype)
    total = total + poison * finite_terms
    return total, ~counted_t


def label_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over labelled samples: logits [B, N], labels int64 [B] with -1 for "no label" (left out;
    0 when no sample has a label)."""
    per_sample = F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none")
    labelled = (labels >= 0).to(per_sample.dtype)
    return (per_sample * labelled).sum() / labelled.sum().clamp_min(1.0)
