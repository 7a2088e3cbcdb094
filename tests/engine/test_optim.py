"""Every LR policy works (TAO's `linear` crashed), with warm-up and the min_lr floor."""

import pytest
import torch
from omegaconf import OmegaConf

from radio.config.schema import OptimConfig
from radio.engine.optim import build_optimizer, build_scheduler, param_groups


def optim_cfg(**kw):
    return OmegaConf.structured(OptimConfig(**kw))


@pytest.mark.parametrize(
    "policy, params",
    [
        ("cosine", {}),
        ("linear", {}),
        ("constant", {}),
        ("step", {"step_size": 5, "gamma": 0.5}),
        ("multistep", {"milestones": [4, 8], "gamma": 0.1}),
    ],
)
def test_every_policy_warms_up_then_follows_its_shape(policy, params):
    model = torch.nn.Linear(4, 4)
    cfg = optim_cfg(policy=policy, policy_params=params, lr=1.0, min_lr=0.01, warmup_steps=3)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=13, steps_per_epoch=13)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] <= 1.0  # linear warm-up
    assert min(lrs) >= 0.01 - 1e-12
    after = lrs[3:]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # never increases after warm-up
    if policy == "constant":
        assert after == [1.0] * len(after)
    else:
        assert after[-1] < after[0]
    if policy == "multistep":
        assert after[3] == pytest.approx(1.0) and after[4] == pytest.approx(0.1)


def test_no_weight_decay_on_biases_norms_and_skip_names():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.pos_embed = torch.nn.Parameter(torch.zeros(1, 3, 4))
    decay, no_decay = param_groups(model, 0.1, ["pos_embed"])
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
