"""One rank of the ZeRO re-basing test (started twice by test_zero_rebase.py): under ZeRO-2 and ZeRO-3, a
PHI-S re-basing reaches the next forward, survives the next optimizer step, and maps Adam's exp_avg."""

import os
import sys

import torch
import torch.nn as nn

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402

from radio.engine.params import ZeroParams  # noqa: E402
from radio.engine.targets import rebase_linear  # noqa: E402


def random_affine(c: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(c, c, generator=g, dtype=torch.float64) / c**0.5 + 2 * torch.eye(c, dtype=torch.float64)
    return a, torch.randn(c, generator=g, dtype=torch.float64)


def teacher_space(engine, x, affine):
    a, shift = affine
    with torch.no_grad():
        return engine(x).double() @ a.T + shift


def check(stage: int, rank: int) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 12))
    optimizer = torch.optim.AdamW(
        [
            {"params": [module[0].weight, module[2].weight]},
            {"params": [module[0].bias, module[2].bias], "weight_decay": 0},
        ],
        lr=1e-2,
    )
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
        "steps_per_print": 1 << 62,
    }
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(2):  # optimizer state exists for both parameter groups
        engine.backward(engine(x).square().mean())
        engine.step()

    params = ZeroParams(engine, rank)
    linear = engine.module[2]
    old, new = random_affine(12, 2), random_affine(12, 3)
    weight, bias = params.read(linear.weight).double(), params.read(linear.bias).double()
    moments = [params.read_state(p, "exp_avg").double() for p in (linear.weight, linear.bias)]
    before = teacher_space(engine, x, old)

    rebase_linear(linear, old, new, params)
    mix = torch.linalg.solve(new[0], old[0])
    torch.testing.assert_close(teacher_space(engine, x, new), before, rtol=1e-5, atol=1e-5)  # the next forward
    torch.testing.assert_close(params.read(linear.weight).double(), mix @ weight, rtol=1e-5, atol=1e-6)  # the master
    expected_bias = torch.linalg.solve(new[0], old[0] @ bias + old[1] - new[1])
    torch.testing.assert_close(params.read(linear.bias).double(), expected_bias, rtol=1e-5, atol=1e-6)
    for p, m in zip((linear.weight, linear.bias), moments):
        torch.testing.assert_close(mix.T @ params.read_state(p, "exp_avg").double(), m, rtol=1e-4, atol=1e-7)

    for group in engine.optimizer.param_groups:
        group["lr"] = 0.0  # a step that changes nothing: what it leaves is what the masters hold
    engine.backward(engine(x).square().mean())
    engine.step()
    torch.testing.assert_close(params.read(linear.weight).double(), mix @ weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(teacher_space(engine, x, new), before, rtol=1e-5, atol=1e-5)
    print(f"rank {rank}: ZeRO-{stage} re-basing ok", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in (2, 3):
        check(stage, int(os.environ["RANK"]))
    sys.exit(0)
