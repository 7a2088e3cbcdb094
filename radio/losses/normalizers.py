"""Feature normalisers for teacher targets (``distill.feature_normalizer``).

The student's head regresses normalised teacher features y' = f(y). Each normaliser gives its inverse as
an affine map (``inverse_affine``), which export folds into the head's output Linear
(``models/heads.fold_affine_into_head``) so the exported adaptor predicts teacher-space features directly.
"""

from typing import Callable, Dict, Optional, Tuple

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

    def _accumulate(self, rows: torch.Tensor) -> None:
        self.pending_sum.add_(rows.sum(0))
        self.pending_sum_sq.add_(rows.pow(2).sum(0))

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

    def observe(self, features: torch.Tensor, *, starts_step: bool) -> None:
        return None

    def refresh_if_due(self) -> bool:
        return False

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def inverse_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.eye(self.dim, dtype=torch.float64), torch.zeros(self.dim, dtype=torch.float64)

    def log_values(self) -> Dict[str, float]:
        return {}


# Constructor(dim, refresh_every_n_steps=, freeze_after_steps=) per name of names.FEATURE_NORMALIZERS.
NORMALIZERS: Dict[str, Callable[..., nn.Module]] = {
    "phi_s": PhiStandardizer,
    "standardize": ChannelStandardizer,
    "none": lambda dim, **schedule: IdentityNormalizer(dim),
}


def build_feature_normalizer(
    kind: str, dim: int, *, refresh_every_n_steps: int = 100, freeze_after_steps: Optional[int] = None
) -> nn.Module:
    """``phi_s`` -> PhiStandardizer, ``standardize`` -> ChannelStandardizer, ``none`` -> IdentityNormalizer.

    dim: the teacher feature width C. The schedule arguments come from ``distill.phi_s`` and apply to
    both online normalisers.
    """
    build = NORMALIZERS[normalize_feature_normalizer(kind)]
    return build(dim, refresh_every_n_steps=refresh_every_n_steps, freeze_after_steps=freeze_after_steps)
