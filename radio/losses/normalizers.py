"""Feature normalisers for teacher targets (``distill.feature_normalizer``) and folding for export.

The student's head regresses normalised teacher features y' = f(y); for export the inverse f⁻¹ is folded
into the head's last Linear layer so the exported adaptor predicts teacher-space features directly.
"""

import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from radio.losses.names import normalize_feature_normalizer
from radio.losses.online_stats import OnlineFeatureNormalizer
from radio.losses.phi_s import PhiStandardizer

# A channel whose variance is below this is constant; it is centred but not scaled.
_MIN_VARIANCE = 1e-12


class ChannelStandardizer(OnlineFeatureNormalizer):
    """``standardize``: y' = (y − μ) / σ per channel, with online float64 mean and variance."""

    def __init__(self, dim: int, refresh_every_n_steps: int = 100, freeze_after_steps: Optional[int] = None):
        super().__init__(dim, refresh_every_n_steps, freeze_after_steps)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("std", torch.ones(dim, dtype=torch.float64))

    def stat_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {**super().stat_shapes(), "sum": (self.dim,), "sum_sq": (self.dim,)}

    def _accumulate(self, rows: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {
            "count": torch.tensor(float(rows.shape[0]), dtype=torch.float64, device=rows.device),
            "sum": rows.sum(0),
            "sum_sq": rows.pow(2).sum(0),
        }

    def _recompute(self) -> None:
        n = self.total_count
        mean = self.total_sum / n
        var = (self.total_sum_sq / n - mean.pow(2)).clamp_min(0.0)
        self.mean.copy_(mean)
        self.std.copy_(torch.where(var > _MIN_VARIANCE, var.sqrt(), torch.ones_like(var)))

    def _forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        return (rows.to(dtype) - self.mean.to(dtype)) / self.std.to(dtype)

    def inverse_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.diag(self.std), self.mean

    def log_values(self) -> Dict[str, float]:
        return {**super().log_values(), "mean_std": float(self.std.mean())}


class IdentityNormalizer(nn.Module):
    """``none``: targets are used as the teacher produced them. Same interface, no state."""

    initialized = True
    frozen = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def update(self, features: torch.Tensor, valid_mask: Optional[torch.Tensor] = None) -> bool:
        return False

    def sync_statistics(self) -> None:
        return None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def inverse_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.eye(self.dim, dtype=torch.float64), torch.zeros(self.dim, dtype=torch.float64)

    def log_values(self) -> Dict[str, float]:
        return {}


def build_feature_normalizer(
    kind: str, dim: int, *, refresh_every_n_steps: int = 100, freeze_after_steps: Optional[int] = None
) -> nn.Module:
    """``phi_s`` -> PhiStandardizer, ``standardize`` -> ChannelStandardizer, ``none`` -> IdentityNormalizer.

    dim: the teacher feature width C. The schedule arguments come from ``distill.phi_s`` and apply to
    both online normalisers.
    """
    kind = normalize_feature_normalizer(kind)
    if kind == "none":
        return IdentityNormalizer(dim)
    cls = PhiStandardizer if kind == "phi_s" else ChannelStandardizer
    return cls(dim, refresh_every_n_steps=refresh_every_n_steps, freeze_after_steps=freeze_after_steps)


@torch.no_grad()
def fold_inverse_into_linear(linear: nn.Linear, normalizer: nn.Module) -> nn.Linear:
    """A new Linear whose output is normalizer.inverse(linear(x)).

    With inverse(y') = A y' + s: W' = A W, b' = A b + s (computed in float64, stored in the layer's
    dtype). linear.out_features must equal the normaliser's width.
    """
    a, shift = normalizer.inverse_affine()
    if linear.out_features != a.shape[0]:
        raise ValueError(
            f"cannot fold a {a.shape[0]}-channel normaliser into a Linear with {linear.out_features} outputs"
        )
    weight = linear.weight.detach().to(torch.float64)
    bias = (
        linear.bias.detach().to(torch.float64)
        if linear.bias is not None
        else torch.zeros(linear.out_features, dtype=torch.float64, device=weight.device)
    )
    a, shift = a.to(weight.device), shift.to(weight.device)
    folded = nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=linear.weight.dtype
    )
    folded.weight.copy_(a @ weight)
    folded.bias.copy_(a @ bias + shift)
    return folded


def fold_inverse_into_head(head: nn.Module, normalizer: nn.Module) -> nn.Module:
    """A copy of ``head`` whose last ``nn.Linear`` (in registration order) has the inverse folded in.

    Valid when that Linear produces the head's output (true for the v2 MLP and the attn head, whose
    last layer is the output projection); the original head is left unchanged.
    """
    if isinstance(head, nn.Linear):
        return fold_inverse_into_linear(head, normalizer)
    folded = copy.deepcopy(head)
    linears = [name for name, module in folded.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(head).__name__} has no nn.Linear to fold the normaliser into")
    parent_name, _, child = linears[-1].rpartition(".")
    parent = folded.get_submodule(parent_name)
    setattr(parent, child, fold_inverse_into_linear(getattr(parent, child), normalizer))
    return folded
