"""A normaliser refresh re-bases the head so its teacher-space prediction does not jump."""

import os

import pytest
import torch
import torch.nn as nn

from radio.engine.params import ReplicatedParams
from radio.engine.targets import SpatialTargets
from radio.losses.normalizers import build_feature_normalizer
from radio.models.heads import HeadSpec
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


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
    head = HeadSpec("v2", 8, c, hidden=32, num_inner=1).build()
    with torch.no_grad():
        head.output_linear.bias.normal_()  # a non-trivial prediction
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    head(torch.randn(5, 8)).square().sum().backward()
    optimizer.step()  # creates exp_avg / exp_avg_sq
    return head, optimizer


def step(targets, features):
    """One optimizer step of one micro-batch, as engine/step.py drives it: observe, refresh, normalise."""
    targets.observe("t", features, starts_step=True)
    rebased = targets.refresh()
    return targets("t", features), rebased


def test_refresh_keeps_teacher_space_prediction_and_maps_the_first_moment():
    c = 16
    norm = build_feature_normalizer("phi_s", c, refresh_every_n_steps=2)
    head, optimizer = head_with_momentum(c)
    targets = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}), ReplicatedParams(head, optimizer))
    x = torch.randn(5, 8)
    linear = head.output_linear

    assert step(targets, anisotropic(4, c, 1, 0.0))[1] == []  # first refresh: nothing to re-base from
    assert step(targets, anisotropic(4, c, 2, 1.0))[1] == []  # no refresh due
    before = norm.inverse(head(x)).detach()
    old_a, _ = norm.inverse_affine()
    old_a = old_a.clone()
    moments = {name: optimizer.state[p]["exp_avg"].clone() for name, p in linear.named_parameters()}
    second_moments = {name: optimizer.state[p]["exp_avg_sq"].clone() for name, p in linear.named_parameters()}
    assert step(targets, anisotropic(4, c, 3, 5.0))[1] == ["t"]  # third step: refresh with shifted statistics
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
    step(targets, anisotropic(4, c, 1, 0.0))  # the first refresh: nothing to re-base from
    for seed in (2, 3, 4):
        step(targets, anisotropic(4, c, seed, 5.0))
    assert params.writes == []
    targets_due = SpatialTargets(nn.ModuleDict({"t": norm}), nn.ModuleDict({"t": head}), params)
    norm.refresh_every_n_steps = 2  # step 5 (1 + 2 + 2) is now due: the head is written
    step(targets_due, anisotropic(4, c, 5, -3.0))
    assert params.writes == [head.output_linear.weight, head.output_linear.bias]


@pytest.mark.slow
def test_with_accumulation_every_re_basing_comes_before_the_steps_first_gradient(demo_assets, tmp_path, monkeypatch):
    """A re-basing after a micro-batch's backward would mix two target bases in one step's gradient."""
    import radio.engine.step as step_module
    import radio.engine.targets as targets_module
    from radio.engine.loop import run
    from radio.run.spec import load_run_config

    accum, backwards, rebased_at = 2, [], []
    real_poison, real_rebase = step_module.poisoned_if_nonfinite, targets_module.rebase_linear

    def counting_poison(loss):  # called once per micro-batch, right before its backward
        backwards.append(None)
        return real_poison(loss)

    def recording_rebase(*args, **kwargs):
        rebased_at.append(len(backwards))
        return real_rebase(*args, **kwargs)

    monkeypatch.setattr(step_module, "poisoned_if_nonfinite", counting_poison)
    monkeypatch.setattr(targets_module, "rebase_linear", recording_rebase)
    overrides = tiny_run_overrides(
        demo_assets,
        str(tmp_path / "r"),
        "train.max_steps=5",
        f"train.grad_accumulation_steps={accum}",
        "distill.phi_s.refresh_every_n_steps=2",
    )
    run(load_run_config(QUICKSTART_SPEC, overrides))
    assert len(backwards) == 5 * accum
    # Steps 1, 3, 5 refresh (1, 1 + n, ...); steps 3 and 5 re-base both teachers' spatial heads.
    assert rebased_at == [2 * accum, 2 * accum, 4 * accum, 4 * accum]
