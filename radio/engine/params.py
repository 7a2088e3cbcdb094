"""The trained module's parameters and optimizer state, whoever holds them.

Under DDP (and a single process) every rank holds the full fp32 parameters and the whole torch optimizer
state. Under ZeRO-2 the fp32 master parameters and the optimizer state are partitioned across ranks and the
module holds a working copy (bf16 when training in bf16) that DeepSpeed refreshes from the masters after
every step; under ZeRO-3 the module's parameters are partitioned too. Everything that reads or edits
trained weights outside the forward/backward — the PHI-S re-basing, checkpoints, ``student_final`` — goes
through one of the two classes here, so it is right under every engine:

- ``read(p)`` / ``write(p, value)``: the full fp32 value of one parameter (a collective under ZeRO);
  ``write`` sets the fp32 master *and* the working copy, so the next forward already sees it.
- ``state_keys()``, ``read_state(p, key)`` / ``write_state(p, key, value)``: the optimizer's state
  tensors (``exp_avg`` ...) of one parameter.
- ``full_state_dict()``: the consolidated fp32 state of the module (a collective under ZeRO).
- ``save(folder)`` / ``load(folder)``: the optimizer (and, under ZeRO, the sharded engine state).
"""

import os
from typing import Dict, List, Optional, Set

import torch
import torch.nn as nn

from radio.errors import CheckpointError
from radio.run.layout import DEEPSPEED_DIR, OPTIMIZER_FILE


class ReplicatedParams:
    """DDP or one process: parameters and optimizer state are plain tensors on every rank."""

    kind = "ddp"

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.module = module
        self.optimizer = optimizer

    def read(self, param: nn.Parameter) -> torch.Tensor:
        return param.detach().float()

    @torch.no_grad()
    def write(self, param: nn.Parameter, value: torch.Tensor) -> None:
        param.copy_(value.to(param.dtype))

    def state_keys(self) -> Set[str]:
        """Names of the optimizer's per-parameter state tensors (empty before its first step)."""
        return _state_keys(self.optimizer.state)

    def read_state(self, param: nn.Parameter, key: str) -> Optional[torch.Tensor]:
        return self.optimizer.state.get(param, {}).get(key)

    @torch.no_grad()
    def write_state(self, param: nn.Parameter, key: str, value: torch.Tensor) -> None:
        state = self.optimizer.state[param][key]
        state.copy_(value.to(state.dtype))

    def full_state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def full_shapes(self) -> Dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in self.module.state_dict().items()}

    def save(self, folder: str, *, is_main: bool) -> List[str]:
        """Write the optimizer state; returns the files this rank wrote."""
        if not is_main:
            return []
        path = os.path.join(folder, OPTIMIZER_FILE)
        torch.save(self.optimizer.state_dict(), path)
        return [path]

    def load(self, folder: str) -> None:
        path = os.path.join(folder, OPTIMIZER_FILE)
        if not os.path.isfile(path):
            raise CheckpointError(
                f"checkpoint {folder!r} is missing {OPTIMIZER_FILE}; it is damaged or was not written by a DDP run."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or unsafe file: say which one
            raise CheckpointError(f"cannot read {path!r}: {exc}") from None
        self.optimizer.load_state_dict(state)


class ZeroParams:
    """DeepSpeed ZeRO-2/3: go through DeepSpeed's tensor-fragment API and its engine checkpoints."""

    def __init__(self, engine, rank: int):
        self.engine = engine
        self.module = engine.module
        self.stage = engine.zero_optimization_stage()
        self.kind = f"zero{self.stage}"
        self.rank = rank

    def read(self, param: nn.Parameter) -> torch.Tensor:
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(param)

    @torch.no_grad()
    def write(self, param: nn.Parameter, value: torch.Tensor) -> None:
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param

        value = value.float()
        # The master alone would not reach the next forward; the working copy alone would be overwritten from
        # the master after the next step: set both.
        safe_set_full_fp32_param(param, value)
        if self.stage == 3:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if self.rank == 0:
                    param.copy_(value.to(param.dtype))
        else:
            param.copy_(value.to(param.dtype))

    def state_keys(self) -> Set[str]:
        # The wrapped torch optimizer holds the state of this rank's flat partitions.
        return _state_keys(self.engine.optimizer.optimizer.state)

    def read_state(self, param: nn.Parameter, key: str) -> Optional[torch.Tensor]:
        from deepspeed.utils import safe_get_full_optimizer_state

        self._link_optimizer_state()
        return safe_get_full_optimizer_state(param, key)

    def write_state(self, param: nn.Parameter, key: str, value: torch.Tensor) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        self._link_optimizer_state()
        safe_set_full_optimizer_state(param, value.float(), key)

    def _link_optimizer_state(self) -> None:
        if self.stage < 3:
            # ZeRO-1/2 link each parameter to its optimizer-state fragment right after the first param
            # group's first step, before the other groups have any state, and never again: link once more so
            # every group's state (the no-decay group's too) is reachable.
            optimizer = self.engine.optimizer
            optimizer._hp_optimizer_states_linked = False
            optimizer._lazy_init_hp_params_optimizer_state()

    def full_state_dict(self) -> Dict[str, torch.Tensor]:
        """fp32 masters (not the working copy) for parameters, buffers as they are; every rank must call."""
        state = {name: self.read(p).cpu() for name, p in self.module.named_parameters()}
        state.update({name: b.detach().cpu() for name, b in self.module.named_buffers()})
        return state

    def full_shapes(self) -> Dict[str, tuple]:
        shapes = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in self.module.named_parameters()}
        shapes.update({n: tuple(b.shape) for n, b in self.module.named_buffers()})
        return shapes

    def save(self, folder: str, *, is_main: bool) -> List[str]:
        """Every rank writes its partition into ``folder/deepspeed``; returns the files this rank wrote."""
        self.engine.save_checkpoint(folder, tag=DEEPSPEED_DIR, save_latest=False)
        root = os.path.join(folder, DEEPSPEED_DIR)
        mine = f"pp_rank_{self.rank}_"
        return [
            os.path.join(root, name)
            for name in sorted(os.listdir(root))
            if mine in name or (is_main and "pp_rank_" not in name)
        ]

    def load(self, folder: str) -> None:
        root = os.path.join(folder, DEEPSPEED_DIR)
        if not os.path.isdir(root):
            raise CheckpointError(
                f"checkpoint {folder!r} has no {DEEPSPEED_DIR}/ folder: it was written by a DDP run, or is damaged."
            )
        self.engine.checkpoint_engine = _weights_only_checkpoint_engine()
        try:
            path, _ = self.engine.load_checkpoint(folder, tag=DEEPSPEED_DIR, load_lr_scheduler_states=False)
        except Exception as exc:  # a corrupt, truncated or unsafe file
            raise CheckpointError(f"cannot load the DeepSpeed state in {root!r}: {type(exc).__name__}: {exc}") from None
        if path is None:
            raise CheckpointError(f"DeepSpeed found no engine state in {root!r}; the checkpoint is damaged.")


def _state_keys(state) -> Set[str]:
    return {key for entry in state.values() for key, value in entry.items() if torch.is_tensor(value)}


def _weights_only_checkpoint_engine():
    """DeepSpeed's torch checkpoint engine, reading with ``weights_only=True``: its files hold tensors,
    containers and a few plain DeepSpeed records, so nothing in a checkpoint can run code when read."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(_deepspeed_checkpoint_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnlyCheckpointEngine()


def _deepspeed_checkpoint_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]
