"""A normaliser refresh re-bases the head so its teacher-space prediction does not jump."""

import torch
import torch.nn as nn

from radio.engine.params import ReplicatedParams
from radio.engine.targets import SpatialTargets, last_linear
from radio.losses.normalizers import build_feature_normalizer
from radio.models.heads import build_head


def anisotropic(n, c, seed, shift):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.1, 3.0, c, dtype=torch.float64)
    return (torch.randn(n, c, 2, 2, generator=g, dtype=torch.float64) * scales[None, :, None, None] + shift).float()


class RecordingParams(ReplicatedParams):
    def __init__(self, module, optimizer):
        super().__init__(module, optimizer)
        self.writes = []

    def write(self, param, value):
        self.writes.append(param)
        super().write(param, value)


def head_with_momentum(c):
    torch.manual_seed(0)
    head = build_head("v2", 8, 32, c, 1)
    with torch.no_grad():
        last_linear(head).bias.normal_()  # a non-trivial prediction
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    head(torch.randn(5, 8)).square().sum().backward()
    optimizer.step()  # creates exp_avg / exp_avg_sq
    return head, optimizer


def test_refresh_keeps_teacher_space_prediction_and_maps_the_first_moment():
    c = 16
    norm = build_feature_normalizer("phi_s", c, refresh_every_n_steps=2)
    head, optimizer = head_with_momentum(c)
    targets = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}), ReplicatedParams(head, optimizer))
    x = torch.randn(5, 8)
    linear = last_linear(head)

    targets("t", anisotropic(4, c, 1, 0.0))  # first refresh
    targets("t", anisotropic(4, c, 2, 1.0))  # no refresh due
    before = norm.inverse(head(x)).detach()
    old_a, _ = norm.inverse_affine()
    old_a = old_a.clone()
    moments = {name: optimizer.state[p]["exp_avg"].clone() for name, p in linear.named_parameters()}
    second_moments = {name: optimizer.state[p]["exp_avg_sq"].clone() for name, p in linear.named_parameters()}
    targets("t", anisotropic(4, c, 3, 5.0))  # third update: refresh with shifted statistics
    new_a, _ = norm.inverse_affine()
    assert not torch.allclose(new_a, old_a)  # the basis really changed
    after = norm.inverse(head(x)).detach()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    # First moments move like gradients: exp_avg' = M^-T exp_avg with M = A_new^-1 A_old, i.e. M^T exp_avg' = exp_avg.
    mix = torch.linalg.solve(new_a, old_a)
    for name, p in linear.named_parameters():
        mapped = optimizer.state[p]["exp_avg"].to(torch.float64)
        torch.testing.assert_close(mix.T @ mapped, moments[name].to(torch.float64), rtol=1e-4, atol=1e-6)
        assert torch.equal(optimizer.state[p]["exp_avg_sq"], second_moments[name])


def test_without_a_refresh_the_head_is_not_written():
    c = 16
    norm = build_feature_normalizer("phi_s", c, refresh_every_n_steps=100)
    head, optimizer = head_with_momentum(c)
    params = RecordingParams(head, optimizer)
    targets = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}), params)
    targets("t", anisotropic(4, c, 1, 0.0))  # the first refresh: nothing to re-base from
    for seed in (2, 3, 4):
        targets("t", anisotropic(4, c, seed, 5.0))
    assert params.writes == []
    targets_due = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}), params)
    norm.refresh_every_n_steps = 2  # calls 5 (1 + 2 + 2) is now due: the head is written
    targets_due("t", anisotropic(4, c, 5, -3.0))
    assert params.writes == [last_linear(head).weight, last_linear(head).bias]
