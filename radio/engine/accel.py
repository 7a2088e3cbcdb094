"""Accelerate set-up and the few collectives the loop needs."""

import os
import warnings
from typing import Dict, List, Optional, Sequence

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
    if world_size == 1:
        note = single_process_cpu_launch_note(os.environ, launcher_arguments())
        if note:
            print(note, flush=True)
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


def launcher_arguments() -> List[str]:
    """The command line of the process that started this one (``accelerate launch ...``); empty where it
    cannot be read (not Linux, no permission)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as stream:
            return [part.decode(errors="replace") for part in stream.read().split(b"\0") if part]
    except OSError:
        return []


def _requested_processes(launcher_args: Sequence[str]) -> Optional[int]:
    """``--num_processes N`` (or ``--num-processes=N``) given to the launcher, before the training script."""
    for index, arg in enumerate(launcher_args):
        if arg.endswith(".py"):  # the training script: what follows are its own arguments
            return None
        name, equals, value = arg.partition("=")
        if name in ("--num_processes", "--num-processes"):
            value = value if equals else (launcher_args[index + 1] if index + 1 < len(launcher_args) else "")
            return int(value) if value.isdigit() else None
    return None


def single_process_cpu_launch_note(environ, launcher_args: Sequence[str]) -> Optional[str]:
    """``accelerate launch --cpu --num_processes N`` (N > 1) starts ONE process: with ``--cpu`` Accelerate
    takes its simple launcher, which runs the script once and only exports ``MASTER_ADDR``/``MASTER_PORT``
    for the processes it never starts (accelerate/utils/launch.py, ``prepare_simple_launcher_cmd_env``).
    Say so, and what starts N processes. ``environ``: this process's environment (``WORLD_SIZE`` unset:
    one process); ``launcher_args``: the launcher's command line."""
    if environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1", "yes") or "WORLD_SIZE" in environ:
        return None
    requested = _requested_processes(launcher_args)
    if requested is None or requested < 2:
        return None
    return (
        f"warning: `accelerate launch --cpu --num_processes {requested}` started ONE process (with --cpu "
        f"Accelerate runs the script once); this run trains on 1 process, not {requested}. For {requested} "
        f"CPU processes drop --cpu: `accelerate launch --multi_gpu --num_processes {requested} radio/train.py "
        f'--spec SPEC ...` (on a machine with GPUs add CUDA_VISIBLE_DEVICES=""), or run '
        f"`radio distill -e SPEC train.num_gpus={requested}`."
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
