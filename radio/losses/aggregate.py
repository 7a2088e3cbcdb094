"""Combining per-teacher losses into the training objective (docs/architecture.md, "losses")."""

from typing import List, Mapping, Tuple

import torch
import torch.nn.functional as F


def aggregate_teacher_losses(
    losses: Mapping[str, torch.Tensor], lambdas: Mapping[str, float]
) -> Tuple[torch.Tensor, List[str]]:
    """Total = Σ_i λ_i / N · L_i over the teachers whose loss is finite.

    losses: teacher name -> scalar loss; lambdas: teacher name -> ``loss_lambda``. N is the number of
    configured teachers (``len(losses)``) and stays so when terms are skipped: a teacher that produced a
    NaN/inf loss simply contributes nothing this step, the others keep their usual weight.
    Returns (total, names of the skipped teachers). When every term is skipped the total is their
    non-finite sum, still connected to the graph: the engine's non-finite-step rule applies, and
    backpropagating it makes the step's gradients non-finite on every rank (``engine/loop.py``).
    """
    if not losses:
        raise ValueError("aggregate_teacher_losses needs at least one teacher loss")
    missing = sorted(set(losses) - set(lambdas))
    if missing:
        raise KeyError(f"no loss_lambda for teacher(s) {missing}")
    n = len(losses)
    # One host sync for all teachers instead of one per teacher.
    finite = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()]).tolist()
    total = None
    skipped: List[str] = []
    for (name, value), ok in zip(losses.items(), finite):
        if not ok:
            skipped.append(name)
            continue
        term = value * (float(lambdas[name]) / n)
        total = term if total is None else total + term
    if total is None:
        total = sum(losses.values())
    return total, skipped


def label_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over labelled samples: logits [B, N], labels int64 [B] with -1 for "no label" (left out;
    0 when no sample has a label)."""
    per_sample = F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none")
    labelled = (labels >= 0).to(per_sample.dtype)
    return (per_sample * labelled).sum() / labelled.sum().clamp_min(1.0)
