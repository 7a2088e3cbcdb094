"""Hadamard matrices for PHI-S, and the rotation used where no Hadamard matrix is available.

A Hadamard matrix H of order n has entries ±1 and H Hᵀ = n I. Orders built here: n = 2^k · m where m
is 1 (Sylvester), q + 1 for a prime q ≡ 3 (mod 4) (Paley I) or 2(q + 1) for a prime q ≡ 1 (mod 4)
(Paley II); the factors are combined by Kronecker product. That covers every power of two and the
common ViT widths (384 = 12·32, 768 = 12·64, 1152 = 36·32, 1280 = 20·64, 1536 = 12·128, ...).
"""

import math
from functools import lru_cache
from typing import Optional, Tuple

import torch


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    return all(q % d for d in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = χ(j − i) for the quadratic character χ of GF(q), q prime: int64 [q, q]."""
    residues = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0] + [1 if a in residues else -1 for a in range(1, q)], dtype=torch.int64)
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def _paley_core(q: int) -> torch.Tensor:
    """S = [[0, 1ᵀ], [±1, Q]] of order q + 1 (the sign makes S skew for q ≡ 3, symmetric for q ≡ 1)."""
    sign = -1 if q % 4 == 3 else 1
    s = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    s[0, 1:] = 1
    s[1:, 0] = sign
    s[1:, 1:] = _jacobsthal(q)
    return s


def _paley_i(q: int) -> torch.Tensor:
    """Order q + 1 for prime q ≡ 3 (mod 4): H = I + S."""
    return torch.eye(q + 1, dtype=torch.int64) + _paley_core(q)


def _paley_ii(q: int) -> torch.Tensor:
    """Order 2(q + 1) for prime q ≡ 1 (mod 4): each 0 of S becomes [[1,−1],[−1,−1]], each ±1 ±[[1,1],[1,−1]]."""
    s = _paley_core(q)
    plus = torch.tensor([[1, 1], [1, -1]], dtype=torch.int64)
    zero = torch.tensor([[1, -1], [-1, -1]], dtype=torch.int64)
    return torch.kron(s, plus) + torch.kron(torch.eye(q + 1, dtype=torch.int64), zero)


def _paley_for(m: int) -> Optional[Tuple[str, int]]:
    if m >= 4 and _is_prime(m - 1) and (m - 1) % 4 == 3:
        return "paley_i", m - 1
    if m >= 4 and m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return "paley_ii", m // 2 - 1
    return None


def hadamard_construction(n: int) -> Optional[Tuple[int, Optional[Tuple[str, int]]]]:
    """How order n is built: (power of two 2^k, Paley factor (kind, q) or None), or None if unsupported.

    The largest power of two is preferred, so the Paley factor is as small as possible.
    """
    if n < 1:
        return None
    k = (n & -n).bit_length() - 1  # exponent of the largest power of two dividing n
    for e in range(k, -1, -1):
        m = n >> e
        if m == 1:
            return 1 << e, None
        paley = _paley_for(m)
        if paley is not None:
            return 1 << e, paley
    return None


@lru_cache(maxsize=None)
def _hadamard_int(n: int) -> Optional[torch.Tensor]:
    plan = hadamard_construction(n)
    if plan is None:
        return None
    power, paley = plan
    h = torch.ones(1, 1, dtype=torch.int64)
    if paley is not None:
        kind, q = paley
        h = _paley_i(q) if kind == "paley_i" else _paley_ii(q)
    sylvester = torch.tensor([[1, 1], [1, -1]], dtype=torch.int64)
    while h.shape[0] < n:
        h = torch.kron(sylvester, h)
    return h


def hadamard_matrix(n: int, normalized: bool = True) -> Optional[torch.Tensor]:
    """A Hadamard matrix of order n, or None when ``hadamard_construction(n)`` has no recipe.

    normalized=True: float64 with entries ±1/√n (orthogonal, H Hᵀ = I); False: int64 ±1 (H Hᵀ = n I).
    """
    h = _hadamard_int(n)
    if h is None:
        return None
    return h.to(torch.float64) / math.sqrt(n) if normalized else h.clone()


def balancing_rotation(eigenvalues: torch.Tensor) -> torch.Tensor:
    """An orthogonal R [C, C] (float64) with diag(R diag(λ) Rᵀ) = mean(λ) in every entry.

    The fallback for widths without a Hadamard matrix. Such an R exists by the Schur–Horn theorem; it is
    built from at most C − 1 Givens rotations, each of which sets one diagonal entry (the largest) to the
    mean by rotating it against the smallest one. Unlike a Hadamard matrix it depends on λ, so it is
    recomputed with the statistics.
    """
    lam = eigenvalues.detach().to(torch.float64).cpu()
    c = lam.numel()
    m = torch.diag(lam)
    r = torch.eye(c, dtype=torch.float64)
    target = lam.mean().item()
    tol = 1e-12 * max(abs(target), 1e-300)
    for _ in range(c - 1):
        d = torch.diagonal(m)
        i, j = int(torch.argmax(d)), int(torch.argmin(d))
        a, b, cc = m[i, i].item(), m[i, j].item(), m[j, j].item()
        if a - target <= tol or target - cc <= tol:
            break
        # After rotating by θ: m[i, i] = (a + c)/2 + h cos 2θ + b sin 2θ = (a + c)/2 + ρ cos(2θ − φ).
        h = (a - cc) / 2
        rho, phi = math.hypot(h, b), math.atan2(b, h)
        two_theta = phi + math.acos(max(-1.0, min(1.0, (target - (a + cc) / 2) / rho)))
        cos, sin = math.cos(two_theta / 2), math.sin(two_theta / 2)
        for mat in (m, r):
            row_i, row_j = mat[i].clone(), mat[j].clone()
            mat[i], mat[j] = cos * row_i + sin * row_j, -sin * row_i + cos * row_j
        col_i, col_j = m[:, i].clone(), m[:, j].clone()
        m[:, i], m[:, j] = cos * col_i + sin * col_j, -sin * col_i + cos * col_j
    return r.to(eigenvalues.device)
