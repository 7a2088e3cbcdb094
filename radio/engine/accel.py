"""Accelerate set-up and the few collectives the loop needs."""

import os
from typing import Dict

import torch

if not torch.cuda.is_available():
    # Accelerate imports DeepSpeed when installed; tell it the accelerator up front so it does not warn
    # about probing for a GPU on every CPU run.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from accelerate import Accelerator  # noqa: E402
from accelerate.utils import InitProcessGroupKwargs, gather_object  # noqa: E402

from radio.config.schema import TrainConfig  # noqa: E402
from radio.errors import RadioError, SpecError  # noqa: E402

_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def build_accelerator(cfg: TrainConfig) -> Accelerator:
    on_cpu = not torch.cuda.is_available()
    if on_cpu and cfg.precision == "fp16":
        raise SpecError("train.precision=fp16 needs a GPU; on CPU use bf16 or fp32.")
    # NCCL does not exist on CPU; gloo serves DDP there. Naming a backend
    # makes Accelerate initialise a process group, so only do it when a launcher started several ranks.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu and distributed else []
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # Refuse rather than train with checkpoints that could not resume a sharded optimizer exactly.
        raise RadioError(
            "DeepSpeed launches are not supported yet (sharded optimizer checkpoints and non-finite-step "
            "skipping are not implemented for ZeRO); launch with accelerate_configs/multi_gpu.yaml (DDP) instead."
        )
    return Accelerator(mixed_precision=_MIXED_PRECISION[cfg.precision], cpu=on_cpu, kwargs_handlers=handlers)


def reduce_sum(accelerator: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor, reduction="sum")


def sum_counters(accelerator: Accelerator, counters: Dict[str, int]) -> Dict[str, int]:
    """Sum per-rank counter dicts (ranks may have seen different keys)."""
    if accelerator.num_processes == 1:
        return dict(counters)
    total: Dict[str, int] = {}
    for part in gather_object([dict(counters)]):
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
