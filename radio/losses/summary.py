"""Losses on summary vectors (CLS-token predictions vs. the teacher's summary), docs/losses.md.

The teacher's summary first passes a non-affine LayerNorm, which puts teachers with very different
summary scales on an equal footing. Then one of:

- ``cosine``: 1 − cos(s, t), batch mean (the same as loss type CS).
- ``angle``: θ(s, t)² / σ², batch mean, where θ is the angle between the vectors and σ² is the
  teacher's running angular variance (mean squared angle of its summaries to their mean direction).
  Dividing by σ² makes a teacher whose summaries are tightly clustered (small angles everywhere) weigh as
  much as one whose summaries are spread over the sphere.
- ``ce``: soft-target cross entropy between softmax(t/T) and softmax(s/T) over the channels (× T²).
- ``tangent_sphere``: both vectors are projected onto the unit sphere and mapped by the logarithmic map
  into the tangent space at the teacher's running mean direction m; the loss is the squared distance of
  the two tangent vectors / σ². Unlike ``angle`` it also penalises errors in the direction of the
  deviation from m, not only its size.

The running statistics (sum of unit teacher vectors, sum of squared angles, count; float64) are updated
in training mode only, are buffers (so they are checkpointed), and are sized on first use.
"""

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from radio.distributed import all_reduce_sum_
from radio.losses.functional import soft_cross_entropy_rows

# θ = acos(c) has an infinite derivative at c = ±1; keeping c inside the interval keeps gradients finite.
_COS_LIMIT = 1.0 - 1e-6
# Floor on σ² (rad²): a first batch of one vector has zero spread.
_MIN_ANGULAR_VARIANCE = 1e-4


def layer_norm_target(target: torch.Tensor) -> torch.Tensor:
    """Non-affine LayerNorm over the last dim: [B, D] -> [B, D]."""
    return F.layer_norm(target, target.shape[-1:])


def _angle(a_unit: torch.Tensor, b_unit: torch.Tensor) -> torch.Tensor:
    return torch.acos((a_unit * b_unit).sum(-1).clamp(-_COS_LIMIT, _COS_LIMIT))


def sphere_log_map(x_unit: torch.Tensor, base_unit: torch.Tensor) -> torch.Tensor:
    """Logarithmic map of unit vectors x [B, D] at the unit base point [D]: tangent vectors [B, D].

    The result is orthogonal to the base point and its norm is the geodesic angle between x and base.
    """
    cos = (x_unit * base_unit).sum(-1, keepdim=True).clamp(-_COS_LIMIT, _COS_LIMIT)
    theta = torch.acos(cos)
    return (x_unit - cos * base_unit) * (theta / torch.sin(theta))


class SummaryLoss(nn.Module):
    """One summary loss type with its running teacher statistics.

    forward(pred [B, D], target [B, D]) -> scalar. ``target`` is the raw teacher summary; the LayerNorm
    is applied here.
    """

    def __init__(self, summary_loss_type: str = "cosine", temperature: float = 1.0):
        super().__init__()
        if summary_loss_type not in _SUMMARY_LOSSES:
            raise ValueError(f"unknown summary loss type {summary_loss_type!r}; valid: {', '.join(_SUMMARY_LOSSES)}")
        self.summary_loss_type = summary_loss_type
        self.temperature = temperature
        self.register_buffer("direction_sum", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("sq_angle_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @property
    def uses_running_stats(self) -> bool:
        return self.summary_loss_type in _RUNNING_STATS_LOSSES

    def mean_direction(self) -> torch.Tensor:
        """Unit mean direction of the teacher summaries seen so far: [D] float32."""
        return F.normalize(self.direction_sum, dim=0).float()

    def angular_variance(self) -> torch.Tensor:
        """σ² in rad² (scalar float32), floored at a small positive value."""
        var = self.sq_angle_sum / self.count.clamp_min(1.0)
        return var.clamp_min(_MIN_ANGULAR_VARIANCE).float()

    @torch.no_grad()
    def observe(self, target_unit: torch.Tensor) -> None:
        """Add a batch of unit teacher summaries [B, D] to the running statistics, summed over all ranks
        (every rank then holds the same σ², and any rank's checkpoint is the run's)."""
        if self.direction_sum.numel() != target_unit.shape[-1]:
            self.direction_sum = torch.zeros(target_unit.shape[-1], dtype=torch.float64, device=target_unit.device)
        self.direction_sum += all_reduce_sum_(target_unit.double().sum(0))
        sq_angles = _angle(target_unit, self.mean_direction()).double().pow(2).sum()
        count = torch.tensor(float(target_unit.shape[0]), dtype=torch.float64, device=target_unit.device)
        sq_angles, count = all_reduce_sum_(torch.stack([sq_angles, count]))
        self.sq_angle_sum += sq_angles
        self.count += count

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _SUMMARY_LOSSES[self.summary_loss_type](self, pred, layer_norm_target(target))

    def _cosine_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()

    def _ce_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy_rows(pred, target, self.temperature).mean()

    def _observed_units(self, pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unit vectors of pred and target, after adding target to the running statistics (training only,
        or the first batch ever, so σ² exists)."""
        pred_unit, target_unit = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
        if self.training or self.count.item() == 0:
            self.observe(target_unit)
        return pred_unit, target_unit

    def _angle_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_unit, target_unit = self._observed_units(pred, target)
        return _angle(pred_unit, target_unit).pow(2).mean() / self.angular_variance()

    def _tangent_sphere_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_unit, target_unit = self._observed_units(pred, target)
        base = self.mean_direction()
        diff = sphere_log_map(pred_unit, base) - sphere_log_map(target_unit, base)
        return diff.pow(2).sum(-1).mean() / self.angular_variance()

    def log_values(self) -> Dict[str, float]:
        """Running statistics worth plotting (angular std in radians), empty for stateless types."""
        if not self.uses_running_stats:
            return {}
        return {"angular_std": float(self.angular_variance().sqrt())}

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        # direction_sum is sized on first use; take the checkpoint's size before the copy.
        saved = state_dict.get(prefix + "direction_sum")
        if saved is not None and saved.shape != self.direction_sum.shape:
            self.direction_sum = torch.zeros_like(saved, device=self.direction_sum.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


# (loss, pred [B, D], LayerNormed target [B, D]) -> scalar, per name of names.SUMMARY_LOSS_TYPES.
_SUMMARY_LOSSES = {
    "cosine": SummaryLoss._cosine_loss,
    "angle": SummaryLoss._angle_loss,
    "ce": SummaryLoss._ce_loss,
    "tangent_sphere": SummaryLoss._tangent_sphere_loss,
}
_RUNNING_STATS_LOSSES = ("angle", "tangent_sphere")
