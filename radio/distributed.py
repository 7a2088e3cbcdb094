"""The all-reduces the project uses (sum, and max for the step's agreement), on the default torch.distributed group.

Accelerate and DeepSpeed both initialise that group, so the engine (under the Accelerator) and the losses
(which never see it) sum over the same ranks. Without an initialised group, or with one rank, the helpers
do nothing, so single-process runs and unit tests need no process group.
"""

import torch
import torch.distributed as dist


def world_size() -> int:
    """Ranks in the default process group; 1 when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it; unchanged with one rank.

    A collective: every rank must call it with a tensor of the same shape and dtype. The tensor must live
    where the group's backend can reach it (CPU for gloo, including float64; the GPU for NCCL).
    """
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum of ``tensor`` over all ranks, in place; unchanged with one rank (a collective,
    like ``all_reduce_sum_``)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor
