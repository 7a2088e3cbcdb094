"""PHI-S properties on random anisotropic data, the online schedule, checkpoints, folding."""

import numpy as np
import pytest
import torch

from radio.losses.names import FEATURE_NORMALIZERS
from radio.losses.normalizers import ChannelStandardizer, IdentityNormalizer, build_feature_normalizer
from radio.losses.phi_s import PhiStandardizer, phi_s_transform
from radio.models.heads import HeadSpec, fold_affine_into_head
from tests.losses.normalizer_steps import observe_and_refresh


def anisotropic(n, c, seed, rank=None):
    """[n, c] float64 features: non-zero mean, eigenvalues spread over 4 decades, random orientation."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    scales = torch.logspace(-2, 2, c, dtype=torch.float64)
    if rank is not None:
        scales[: c - rank] = 0.0
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scales
    return z @ q.T + torch.linspace(-5, 5, c, dtype=torch.float64)


@pytest.fixture(scope="module")
def fitted():
    x = anisotropic(4000, 64, seed=0)
    norm = PhiStandardizer(64)
    observe_and_refresh(norm, x)
    return norm, x


def test_output_is_zero_mean_with_unit_variance_in_every_channel(fitted):
    norm, x = fitted
    y = norm(x)
    assert y.dtype == torch.float64
    assert y.mean(0).abs().max() < 1e-10
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(64, dtype=torch.float64), atol=1e-10)
    # The input was far from isotropic (eigenvalues over 8 decades, unequal channel variances), and PCA
    # scaling by α alone would leave the channels unequal: the Hadamard rotation is what equalises them.
    eig = torch.linalg.eigvalsh(torch.cov(x.T))
    assert eig.max() / eig.min() > 1e6 and x.var(0).max() / x.var(0).min() > 5
    _, u = torch.linalg.eigh(torch.cov(x.T, correction=0))
    pca_only = norm.alpha * (x - x.mean(0)) @ u
    assert pca_only.var(0).max() / pca_only.var(0).min() > 1e6


def test_alpha_matches_an_independent_numpy_eigendecomposition(fitted):
    norm, x = fitted
    xn = x.numpy()
    cov = np.cov(xn, rowvar=False, bias=True)
    expected = np.clip(np.linalg.eigvalsh(cov), 0, None).mean() ** -0.5
    assert norm.log_values()["alpha"] == pytest.approx(expected, rel=1e-10)


def test_transform_is_alpha_times_an_orthogonal_matrix(fitted):
    norm, _ = fitted
    w = norm.transform / norm.alpha
    assert torch.allclose(w @ w.T, torch.eye(64, dtype=torch.float64), atol=1e-12)


def test_inverse_is_exact(fitted):
    norm, x = fitted
    assert torch.allclose(norm.inverse(norm(x)), x, atol=1e-11, rtol=0)
    spatial = x[:48].reshape(2, 4, 6, 64).permute(0, 3, 1, 2)  # [B, C, h, w]
    assert torch.allclose(norm.inverse(norm(spatial)), spatial, atol=1e-11, rtol=0)


def test_float32_input_gives_float32_output(fitted):
    norm, x = fitted
    y = norm(x.float())
    assert y.dtype == torch.float32
    assert torch.allclose(y.double(), norm(x), atol=1e-3)


def test_alpha_is_invariant_to_rotating_the_data():
    x = anisotropic(3000, 32, seed=1)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    a, b = PhiStandardizer(32), PhiStandardizer(32)
    observe_and_refresh(a, x)
    observe_and_refresh(b, x @ q.T)
    assert b.alpha.item() == pytest.approx(a.alpha.item(), rel=1e-10)


@pytest.mark.parametrize("rows", [10, 2000])
def test_rank_deficient_covariance_keeps_alpha_finite(rows):
    x = anisotropic(rows, 64, seed=2, rank=5)  # rank ≤ 5 (and < 10 rows for the first case)
    norm = PhiStandardizer(64)
    observe_and_refresh(norm, x)
    assert torch.isfinite(norm.alpha) and norm.alpha > 0
    y = norm(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(64, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(norm.inverse(y), x, atol=1e-10, rtol=0)


def test_constant_features_do_not_divide_by_zero():
    norm = PhiStandardizer(16)
    observe_and_refresh(norm, torch.ones(5, 16))
    assert norm.alpha.item() == 1.0 and torch.equal(norm(torch.ones(2, 16)), torch.zeros(2, 16))


def test_online_estimate_equals_the_batch_estimate():
    x = anisotropic(3000, 48, seed=3)
    online = PhiStandardizer(48, refresh_every_n_steps=7)
    for chunk in x.split(100):  # 30 updates; the last refresh is at step 29
        observe_and_refresh(online, chunk)
    online.refresh()
    batch = PhiStandardizer(48)
    observe_and_refresh(batch, x)
    mean, cov = online.statistics()
    assert torch.allclose(mean, x.mean(0), atol=1e-12)
    assert torch.allclose(cov, torch.cov(x.T, correction=0), atol=1e-9)
    assert online.alpha.item() == pytest.approx(batch.alpha.item(), rel=1e-10)
    assert torch.allclose(online(x), batch(x), atol=1e-9)


def test_online_estimate_converges_as_data_accumulates():
    x = anisotropic(20000, 16, seed=4)
    truth = PhiStandardizer(16)
    observe_and_refresh(truth, x)
    norm = PhiStandardizer(16, refresh_every_n_steps=1)
    errors = []
    for chunk in x.split(2000):
        observe_and_refresh(norm, chunk)
        errors.append(abs(norm.alpha.item() / truth.alpha.item() - 1))
    assert errors[-1] < 1e-12 and errors[0] > errors[-1]


def test_refresh_schedule_and_freeze():
    norm = PhiStandardizer(8, refresh_every_n_steps=100, freeze_after_steps=250)
    data = anisotropic(300 * 4, 8, seed=5).split(4)
    refreshed = [step for step, chunk in enumerate(data, start=1) if observe_and_refresh(norm, chunk)]
    # Refreshes open a step (1, 1 + n, ...); the last one, on the call after the 250 observed, freezes.
    assert refreshed == [1, 101, 201, 251]
    assert norm.frozen and int(norm.steps) == 300  # every optimizer step is counted
    assert norm.total_count.item() == 250 * 4  # nothing after the freeze was observed
    assert norm.log_values()["refreshes"] == 4


def test_with_accumulation_the_frozen_statistics_hold_every_micro_batch_of_the_first_steps():
    """Two micro-batches per step, freeze after 3 steps: the statistics are those of all 6 micro-batches of
    steps 1-3 (not of step 4's), exactly as one micro-batch per step would give them."""
    chunks = anisotropic(10 * 10, 8, seed=7).split(10)
    accumulated = PhiStandardizer(8, refresh_every_n_steps=2, freeze_after_steps=3)
    refreshed = [step for step in range(1, 6) if observe_and_refresh(accumulated, *chunks[2 * step - 2 : 2 * step])]
    assert refreshed == [1, 3, 4] and accumulated.frozen
    assert accumulated.total_count.item() == 6 * 10
    reference = PhiStandardizer(8)
    observe_and_refresh(reference, torch.cat(chunks[:6]))
    for got, want in zip(accumulated.statistics(), reference.statistics()):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_first_update_standardises_immediately_and_forward_before_update_fails():
    norm = PhiStandardizer(8)
    with pytest.raises(RuntimeError, match="observe"):
        norm(torch.zeros(2, 8))
    x = anisotropic(50, 8, seed=6)
    observe_and_refresh(norm, x)
    assert torch.allclose(norm(x).var(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-10)


def test_spatial_update_takes_every_token_as_a_row():
    x = anisotropic(2 * 3 * 3, 8, seed=7)
    spatial = x.reshape(2, 3, 3, 8).permute(0, 3, 1, 2)
    norm = PhiStandardizer(8)
    observe_and_refresh(norm, spatial)
    assert norm.total_count.item() == 18
    assert torch.allclose(norm.statistics()[0], x.mean(0))
    assert torch.allclose(norm(spatial).permute(0, 2, 3, 1).reshape(-1, 8), norm(x))


def test_autocast_does_not_round_the_targets(fitted):
    norm, x = fitted
    y32 = x[:10].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(y32)
    assert out.dtype == torch.float32 and torch.equal(out, norm(y32))


def test_first_refresh_waits_for_a_step_with_finite_features():
    norm = PhiStandardizer(8, refresh_every_n_steps=100)
    spatial = anisotropic(2 * 9, 8, seed=15).reshape(2, 3, 3, 8).permute(0, 3, 1, 2)
    assert not observe_and_refresh(norm, torch.full_like(spatial, float("nan")))
    assert not norm.initialized
    assert observe_and_refresh(norm, spatial) and norm.initialized and int(norm.refreshes) == 1
    assert not observe_and_refresh(norm, spatial)  # initialised: back to the every-100-steps schedule


def test_state_dict_round_trip_continues_identically():
    x = anisotropic(2000, 24, seed=8).split(100)
    a = PhiStandardizer(24, refresh_every_n_steps=5)
    for chunk in x[:7]:
        observe_and_refresh(a, chunk)
    b = PhiStandardizer(24, refresh_every_n_steps=5)
    b.load_state_dict(a.state_dict())
    for chunk in x[7:]:
        observe_and_refresh(a, chunk)
        observe_and_refresh(b, chunk)
    assert torch.equal(a(x[0]), b(x[0]))
    assert {"total_outer", "pending_outer", "transform", "alpha", "steps"} <= set(a.state_dict())


@pytest.mark.parametrize("c", [10, 50])
def test_width_without_hadamard_warns_and_stays_isotropic(c):
    with pytest.warns(UserWarning, match=f"width {c}"):
        norm = PhiStandardizer(c)
    x = anisotropic(1000, c, seed=9)
    observe_and_refresh(norm, x)
    assert torch.allclose(norm(x).var(0, unbiased=False), torch.ones(c, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(norm.inverse(norm(x)), x, atol=1e-10, rtol=0)


def test_phi_s_transform_on_a_hand_sized_example():
    # Σ = diag(4, 0): mean eigenvalue 2, α = 1/√2; H = [[1, 1], [1, -1]]/√2 spreads the variance 4 over
    # both channels as 2 each, times α² = 1/2 -> 1 each.
    zero = torch.zeros(2, dtype=torch.float64)
    w, a, alpha, eig = phi_s_transform(zero, torch.diag(torch.tensor([4.0, 0.0], dtype=torch.float64)))
    assert alpha.item() == pytest.approx(2**-0.5)
    assert torch.allclose(torch.diagonal(w @ torch.diag(eig) @ w.T), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(a @ w, torch.eye(2, dtype=torch.float64))
    # A negative eigenvalue (round-off of a rank-deficient Σ, exaggerated here) is clamped to 0.
    _, _, alpha, eig = phi_s_transform(zero, torch.diag(torch.tensor([4.0, -0.5], dtype=torch.float64)))
    assert eig.tolist() == [0.0, 4.0] and alpha.item() == pytest.approx(2**-0.5)


def test_standardize_and_none():
    x = anisotropic(1000, 12, seed=10)
    std = build_feature_normalizer("Standardize", 12)
    assert isinstance(std, ChannelStandardizer)
    observe_and_refresh(std, x)
    y = std(x)
    assert torch.allclose(y.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(12, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(std.inverse(y), x, atol=1e-10)
    none = build_feature_normalizer("none", 12)
    assert isinstance(none, IdentityNormalizer) and none(x) is x and observe_and_refresh(none, x) is False
    assert isinstance(build_feature_normalizer("PHI_S", 12, refresh_every_n_steps=3), PhiStandardizer)


@pytest.mark.parametrize("kind", FEATURE_NORMALIZERS)
@pytest.mark.parametrize("head_kind", ["linear", "v2", "attn"])
def test_a_head_with_the_inverse_folded_in_predicts_teacher_space(kind, head_kind):
    torch.manual_seed(0)
    norm = build_feature_normalizer(kind, 16)
    observe_and_refresh(norm, anisotropic(500, 16, seed=11).float())
    head = HeadSpec(head_kind, 64, 16, hidden=32, num_inner=1).build()
    x = torch.randn(20, 64)
    expected = norm.inverse(head(x))
    folded = fold_affine_into_head(head, *norm.inverse_affine())
    assert torch.allclose(folded(x), expected, rtol=1e-5, atol=1e-4)
    assert folded.output_linear.weight.dtype == torch.float32
    assert torch.allclose(norm.inverse(head(x)), expected)  # the trained head is untouched


def test_fold_rejects_a_width_mismatch(fitted):
    with pytest.raises(ValueError, match="64-channel"):
        fold_affine_into_head(HeadSpec("linear", 4, 10).build(), *fitted[0].inverse_affine())


def test_non_finite_teacher_rows_are_left_out_of_the_statistics():
    from radio.losses.normalizers import build_feature_normalizer

    torch.manual_seed(0)
    clean = torch.randn(64, 8, dtype=torch.float64) * torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    poisoned = torch.cat([clean, torch.full((3, 8), float("nan"), dtype=torch.float64)])
    poisoned[5, 2] = float("inf")
    a = build_feature_normalizer("phi_s", 8)
    b = build_feature_normalizer("phi_s", 8)
    observe_and_refresh(a, torch.cat([clean[:5], clean[6:]]))
    observe_and_refresh(b, poisoned)
    assert torch.isfinite(b.transform).all()
    torch.testing.assert_close(b.mean, a.mean)
    torch.testing.assert_close(b.transform, a.transform)


def test_loaded_state_restores_the_refresh_schedule():
    from radio.losses.normalizers import build_feature_normalizer

    source = build_feature_normalizer("phi_s", 8, refresh_every_n_steps=3)
    for _ in range(2):
        observe_and_refresh(source, torch.randn(16, 8))
    copy = build_feature_normalizer("phi_s", 8, refresh_every_n_steps=3)
    copy.load_state_dict(source.state_dict())
    assert copy.initialized
    assert not observe_and_refresh(copy, torch.randn(16, 8))  # third step: none due
    assert observe_and_refresh(copy, torch.randn(16, 8))  # fourth step (1 + 3): the scheduled refresh, as in the source
