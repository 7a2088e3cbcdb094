"""Accelerate set-up and the few collectives the loop needs."""

import os
import warnings
from typing import Dict, Optional

import torch

if not torch.cuda.is_available():
    # Accelerate imports DeepSpeed when installed; tell it the accelerator up front so it does not warn
    # about probing for a GPU on every CPU run.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DistributedType, InitProcessGroupKwargs, gather_object  # noqa: E402

from radio.config.schema import TrainConfig  # noqa: E402
from radio.engine.deepspeed_config import build_deepspeed_config, deepspeed_requested  # noqa: E402
from radio.errors import SpecError  # noqa: E402

# ``train.precision`` -> Accelerate's ``mixed_precision``; the spec is checked against these names.
PRECISIONS = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def build_accelerator(train: TrainConfig, micro_batch: int) -> Accelerator:
    """The run's Accelerator: one process, DDP or DeepSpeed ZeRO-2/3, as launched.

    micro_batch: ``dataset.batch_size`` (per rank), written into a DeepSpeed config.
    """
    on_cpu = not torch.cuda.is_available()
    if on_cpu and train.precision == "fp16":
        raise SpecError("train.precision=fp16 needs a GPU; on CPU use bf16 or fp32.")
    launched = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    if launched and launched.isdigit() and int(launched) != train.grad_accumulation_steps:
        raise SpecError(
            f"accelerate launch was given gradient_accumulation_steps={launched}, the spec says "
            f"train.grad_accumulation_steps={train.grad_accumulation_steps}; set it in the spec only."
        )
    # NCCL does not exist on CPU; gloo serves DDP and DeepSpeed there. Naming a backend
    # makes Accelerate initialise a process group, so only do it when a launcher started several ranks.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu and world_size > 1 else []
    plugin = None
    if deepspeed_requested():
        from accelerate.utils import DeepSpeedPlugin

        config = build_deepspeed_config(train, micro_batch, world_size)
        plugin = DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=False)
        # DeepSpeed's collectives call torch APIs that torch marks deprecated, once per bucket and step.
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    return Accelerator(
        mixed_precision=PRECISIONS[train.precision],
        cpu=on_cpu and plugin is None,  # cpu=True would quietly turn DeepSpeed off; DS_ACCELERATOR=cpu says CPU
        kwargs_handlers=handlers,
        gradient_accumulation_steps=train.grad_accumulation_steps,
        deepspeed_plugin=plugin,
    )


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def first_error(accelerator: Accelerator, error: Optional[str]) -> Optional[str]:
    """Every rank passes its error (None: fine); every rank gets the first one, naming the rank when it is not
    rank 0, or None when all are fine. A collective, so also a barrier."""
    if accelerator.num_processes == 1:
        return error
    errors = gather_object([error])
    return next((e if rank == 0 else f"(rank {rank}) {e}" for rank, e in enumerate(errors) if e is not None), None)


def sum_counters(accelerator: Accelerator, counters: Dict[str, int]) -> Dict[str, int]:
    """Sum per-rank counter dicts (ranks may have seen different keys)."""
    if accelerator.num_processes == 1:
        return dict(counters)
    total: Dict[str, int] = {}
    for part in gather_object([dict(counters)]):
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
