"""A normaliser refresh re-bases the head so its teacher-space prediction does not jump."""

import torch
import torch.nn as nn

from radio.engine.targets import SpatialTargets, last_linear
from radio.losses.normalizers import build_feature_normalizer
from radio.models.heads import build_head


def anisotropic(n, c, seed, shift):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.1, 3.0, c, dtype=torch.float64)
    return (torch.randn(n, c, 2, 2, generator=g, dtype=torch.float64) * scales[None, :, None, None] + shift).float()


def test_refresh_keeps_teacher_space_prediction_continuous():
    torch.manual_seed(0)
    c = 16
    norm = build_feature_normalizer("phi_s", c, refresh_every_n_steps=2)
    head = build_head("v2", 8, 32, c, 1)
    with torch.no_grad():
        last_linear(head).bias.normal_()  # a non-trivial prediction
    targets = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}))
    x = torch.randn(5, 8)

    targets("t", anisotropic(4, c, 1, 0.0))  # first refresh
    before = norm.inverse(head(x)).detach()
    old_transform = norm.transform.clone()
    targets("t", anisotropic(4, c, 2, 5.0))  # second update: refresh with shifted statistics
    assert not torch.allclose(norm.transform, old_transform)  # the basis really changed
    after = norm.inverse(head(x)).detach()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_without_a_refresh_the_head_is_untouched():
    c = 16
    norm = build_feature_normalizer("phi_s", c, refresh_every_n_steps=100)
    head = build_head("v2", 8, 32, c, 0)
    targets = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}))
    targets("t", anisotropic(4, c, 1, 0.0))
    weight = last_linear(head).weight.clone()
    targets("t", anisotropic(4, c, 2, 5.0))
    assert torch.equal(last_linear(head).weight, weight)
