"""Optimizer with decay/no-decay groups and per-step learning-rate schedules with warm-up."""

import math
import re
import warnings
from typing import Callable, Dict, Iterable, List, Tuple

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from radio.config.schema import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, skip_names: Iterable[str]) -> List[dict]:
    """Biases, norms (every tensor with < 2 dims) and parameters whose name holds a ``skip_names``
    substring get no weight decay."""
    skip_names = tuple(skip_names)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(s in name for s in skip_names):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _betas(cfg: OptimConfig) -> Tuple[float, float]:
    return float(cfg.betas[0]), float(cfg.betas[1])


def _lamb(groups: List[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    from timm.optim import Lamb

    return Lamb(groups, lr=cfg.lr, betas=_betas(cfg))


# ``train.optim.optim`` -> constructor(param groups, cfg); the spec is checked against these names.
OPTIMIZERS: Dict[str, Callable[[List[dict], OptimConfig], torch.optim.Optimizer]] = {
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=_betas(cfg)),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, betas=_betas(cfg)),
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum),
    "lamb": _lamb,
}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optim](param_groups(model, cfg.weight_decay, cfg.skip_names), cfg)


def warmup_steps(cfg: OptimConfig, steps_per_epoch: int) -> int:
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    if cfg.warmup_epochs is not None:
        return int(round(cfg.warmup_epochs * steps_per_epoch))
    return 0


def _cosine(t: int, span: int, floor: float, params) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t / span))


def _linear(t: int, span: int, floor: float, params) -> float:
    return floor + (1 - floor) * (1 - t / span)


def _step(t: int, span: int, floor: float, params) -> float:
    return float(params.get("gamma", 0.1)) ** (t // int(params["step_size"]))


def _multistep(t: int, span: int, floor: float, params) -> float:
    return float(params.get("gamma", 0.1)) ** sum(1 for m in params["milestones"] if t >= int(m))


# ``train.optim.policy`` -> factor(steps after warm-up, decay span, min_lr / lr, policy_params).
LR_POLICIES: Dict[str, Callable[[int, int, float, dict], float]] = {
    "constant": lambda t, span, floor, params: 1.0,
    "cosine": _cosine,
    "linear": _linear,
    "step": _step,
    "multistep": _multistep,
}


def lr_multiplier(cfg: OptimConfig, total_steps: int, warmup: int) -> Callable[[int], float]:
    """Factor on ``cfg.lr`` for optimizer step ``step`` (0-based): linear warm-up, then the policy,
    never below ``min_lr``."""
    floor = cfg.min_lr / cfg.lr
    policy, params = LR_POLICIES[cfg.policy], cfg.policy_params
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(policy(min(step - warmup, decay_steps), decay_steps, floor, params), floor)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    return LambdaLR(optimizer, lr_multiplier(cfg, total_steps, warmup_steps(cfg, steps_per_epoch)))


def advance_schedule(scheduler: LambdaLR) -> None:
    """``scheduler.step()``, once per optimizer step, taken or skipped (non-finite): the schedule follows
    steps, not updates. Torch warns when the optimizer has not stepped before it; here that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        scheduler.step()
