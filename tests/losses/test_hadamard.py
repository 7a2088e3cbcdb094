"""Hadamard constructions (Sylvester × Paley) and the balancing-rotation fallback."""

import pytest
import torch

from radio.losses.hadamard import balancing_rotation, hadamard_construction, hadamard_matrix

LISTED = [768, 1024, 1152, 1280, 1536, 2048]
POWERS_OF_TWO = [2**k for k in range(0, 13)]
SMALL_PALEY = [12, 20, 28, 36, 44, 60, 72, 384, 640, 1792, 3072]


def _assert_orthogonal_rows(h: torch.Tensor, n: int) -> None:
    """H Hᵀ = n I exactly. Full product up to n = 1024; above, Freivalds' check with 32 random ±1
    vectors (a wrong H passes with probability ≤ 2⁻³²). Integer-valued float64 sums here stay far below
    2⁵³, so both checks are exact."""
    hf = h.to(torch.float64)
    if n <= 1024:
        assert torch.equal(hf @ hf.T, n * torch.eye(n, dtype=torch.float64))
        return
    v = torch.randint(0, 2, (n, 32), generator=torch.Generator().manual_seed(n)).to(torch.float64) * 2 - 1
    assert torch.equal(hf @ (hf.T @ v), n * v)


@pytest.mark.parametrize("n", sorted(set(LISTED + POWERS_OF_TWO + SMALL_PALEY)))
def test_hadamard_is_exact(n):
    h = hadamard_matrix(n, normalized=False)
    assert h.dtype == torch.int64 and h.shape == (n, n) and bool((h.abs() == 1).all())
    _assert_orthogonal_rows(h, n)
    hn = hadamard_matrix(n)
    assert torch.equal(hn, h.to(torch.float64) / n**0.5)
    if n <= 1024:
        assert torch.allclose(hn @ hn.T, torch.eye(n, dtype=torch.float64), atol=1e-13, rtol=0)


def test_freivalds_check_catches_a_single_flipped_sign():
    h = hadamard_matrix(2048, normalized=False)
    h[5, 7] *= -1
    with pytest.raises(AssertionError):
        _assert_orthogonal_rows(h, 2048)


def test_listed_sizes_use_the_expected_constructions():
    assert hadamard_construction(768) == (64, ("paley_i", 11))
    assert hadamard_construction(1152) == (32, ("paley_ii", 17))
    assert hadamard_construction(1280) == (64, ("paley_i", 19))
    assert hadamard_construction(1536) == (128, ("paley_i", 11))
    assert hadamard_construction(2048) == (2048, None)


@pytest.mark.parametrize("n", [3, 6, 10, 50, 100])
def test_unsupported_orders_have_no_matrix(n):
    assert hadamard_construction(n) is None and hadamard_matrix(n) is None


@pytest.mark.parametrize("c", [3, 10, 50])
def test_balancing_rotation_equalises_the_diagonal(c):
    lam = torch.rand(c, generator=torch.Generator().manual_seed(c), dtype=torch.float64) ** 4 * 10
    lam[0] = 0.0  # rank-deficient
    r = balancing_rotation(lam)
    assert torch.allclose(r @ r.T, torch.eye(c, dtype=torch.float64), atol=1e-12)
    diag = torch.diagonal(r @ torch.diag(lam) @ r.T)
    assert torch.allclose(diag, lam.mean().expand(c), rtol=1e-10, atol=1e-12)
