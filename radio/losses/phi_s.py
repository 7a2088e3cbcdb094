"""PHI-S: PCA-Hadamard isotropic standardisation of teacher features (Ranzinger et al., 2024).

With μ and Σ = U Λ Uᵀ the mean and covariance of a teacher's features,

    y' = α · H Uᵀ (y − μ),      α = (mean Λ)^(-1/2),      inverse: y = U Hᵀ y' / α + μ,

where H is a normalised Hadamard matrix (H Hᵀ = I, every |H_ij| = 1/√C). Uᵀ decorrelates; H spreads the
total variance evenly, so diag(cov y') = α² · diag(H Λ Hᵀ) = α² · mean Λ = 1 for every channel; one
scalar α makes every channel unit-variance while the map stays a scaled rotation, so the relative
geometry of the teacher's features (and the loss landscape) is preserved. α depends on Λ only, so it is
invariant to rotations of the data. Where no Hadamard matrix of order C is known, a data-dependent
rotation with the same equal-diagonal property is used (``hadamard.balancing_rotation``), with a
warning naming the width.
"""

import warnings
from typing import Dict, Optional, Tuple

import torch

from radio.losses.hadamard import balancing_rotation, hadamard_construction, hadamard_matrix
from radio.losses.online_stats import OnlineFeatureNormalizer

# Below this mean eigenvalue the features are constant; α = 1 instead of dividing by ~0.
_MIN_MEAN_EIGENVALUE = 1e-30


def phi_s_transform(
    mean: torch.Tensor, cov: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PHI-S from float64 mean [C] and covariance [C, C].

    Returns (W [C, C], A [C, C], alpha scalar, eigenvalues [C]), float64, with y' = W (y − μ) and
    y = A y' + μ. Negative eigenvalues (round-off of a rank-deficient Σ) are clamped to 0.
    """
    c = mean.numel()
    eigenvalues, u = torch.linalg.eigh((cov + cov.T) / 2)
    eigenvalues = eigenvalues.clamp_min(0.0)
    mean_eig = eigenvalues.mean()
    alpha = mean_eig.rsqrt() if float(mean_eig) > _MIN_MEAN_EIGENVALUE else torch.ones_like(mean_eig)
    h = hadamard_matrix(c)
    if h is None:
        h = balancing_rotation(eigenvalues)
    h = h.to(device=cov.device, dtype=torch.float64)
    rotation = h @ u.T
    return alpha * rotation, rotation.T / alpha, alpha, eigenvalues


class PhiStandardizer(OnlineFeatureNormalizer):
    """PHI-S with online float64 statistics (see ``online_stats`` for the refresh/freeze schedule).

    forward(y [N, C] or [B, C, h, w]) -> y' of the same shape; inverse(y') -> y.
    """

    def __init__(self, dim: int, refresh_every_n_steps: int = 100, freeze_after_steps: Optional[int] = None):
        super().__init__(dim, refresh_every_n_steps, freeze_after_steps)
        if hadamard_construction(dim) is None:
            warnings.warn(
                f"PHI-S: no Hadamard matrix construction for feature width {dim} (supported: 2^k, "
                "2^k·(q+1) for prime q ≡ 3 mod 4, 2^k·2(q+1) for prime q ≡ 1 mod 4); using a "
                "data-dependent balancing rotation instead, which still gives every channel variance 1",
                stacklevel=2,
            )
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("transform", torch.eye(dim, dtype=torch.float64))
        self.register_buffer("inverse_transform", torch.eye(dim, dtype=torch.float64))
        self.register_buffer("alpha", torch.ones((), dtype=torch.float64))

    def stat_shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {**super().stat_shapes(), "sum": (self.dim,), "outer": (self.dim, self.dim)}

    def _accumulate(self, rows: torch.Tensor) -> None:
        self.pending_sum.add_(rows.sum(0))
        self.pending_outer.addmm_(rows.T, rows)  # into the buffer: no [C, C] temporary per micro-batch

    def statistics(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(μ [C], Σ [C, C]) from the merged totals, float64 (population covariance)."""
        n = self.total_count
        mean = self.total_sum / n
        cov = self.total_outer / n - torch.outer(mean, mean)
        return mean, cov

    def _recompute(self) -> None:
        mean, cov = self.statistics()
        w, a, alpha, _ = phi_s_transform(mean, cov)
        self.mean.copy_(mean)
        self.transform.copy_(w)
        self.inverse_transform.copy_(a)
        self.alpha.copy_(alpha)

    def _forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        w = self.transform.to(dtype)
        # W (y − μ) as one GEMM with a bias (−W μ, float64 before rounding): no centred copy of the targets.
        return torch.addmm(-(self.transform @ self.mean).to(dtype), rows.to(dtype), w.T)

    def inverse_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.inverse_transform, self.mean

    def log_values(self) -> Dict[str, float]:
        return {**super().log_values(), "alpha": float(self.alpha)}
