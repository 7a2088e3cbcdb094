"""The run's state as one object: everything a checkpoint holds, saved and restored together.

- the trained module (student + heads), through ``params`` (``engine/params.py``): consolidated fp32 in
  ``model.safetensors``; the optimizer in ``optimizer.pt`` (DDP) or DeepSpeed's sharded ``deepspeed/``;
- the loss state (normaliser statistics, criteria running statistics);
- the LR scheduler and the loop counters, the world size and engine that wrote them;
- per rank: the data loader's position and the RNG streams.
"""

import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from radio.engine import checkpoint as ckpt
from radio.errors import CheckpointError
from radio.models.checkpoint_io import LoadReport, compare_shapes, load_exact

_OTHER_RUN = (
    "The checkpoint was written by a run with other teachers, heads or student; resume with the spec that "
    "wrote it, or use a fresh results_dir (or train.resume_training_checkpoint_path of a matching run)."
)


@dataclass
class Counters:
    """Loop counters that a checkpoint carries."""

    step: int = 0  # optimizer steps done
    nonfinite_streak: int = 0
    nonfinite_total: int = 0

    def count_step(self, applied: bool) -> None:
        """Count one optimizer step; ``applied`` False: skipped for non-finite loss or gradients."""
        self.step += 1
        self.nonfinite_streak = 0 if applied else self.nonfinite_streak + 1
        self.nonfinite_total += 0 if applied else 1


class RunState:
    def __init__(self, params, loss_state: nn.Module, scheduler, loader, *, rank: int, world_size: int):
        self.params = params
        self.loss_state = loss_state
        self.scheduler = scheduler
        self.loader = loader
        self.rank = rank
        self.world_size = world_size
        self.counters = Counters()

    def save(self, results_dir: str, *, barrier: Callable[[], None], keep: int) -> str:
        """Write a checkpoint of the current step on every rank (a collective); returns its folder."""
        for norm in self.loss_state["normalizers"].values():
            norm.sync_statistics()  # a collective: merge every rank's pending statistics first
        model_state = self.params.full_state_dict()  # a collective under ZeRO
        is_main = self.rank == 0

        def write(folder: str) -> List[str]:
            written = [
                os.path.join(folder, f"rng_rank{self.rank}.pt"),
                os.path.join(folder, f"loader_rank{self.rank}.json"),
            ]
            torch.save(ckpt.rng_state(), written[0])
            ckpt.write_json(written[1], self.loader.state_dict())
            written += self.params.save(folder, is_main=is_main)
            if is_main:
                for name, state in (
                    (ckpt.MODEL_FILE, model_state),
                    (ckpt.NORMALIZERS_FILE, self.loss_state.state_dict()),
                ):
                    written.append(os.path.join(folder, name))
                    save_file(_to_cpu(state), written[-1])
            return written

        trainer_state = {
            "counters": asdict(self.counters),
            "scheduler": self.scheduler.state_dict(),
            "world_size": self.world_size,
            "engine": self.params.kind,
        }
        return ckpt.save_checkpoint(
            results_dir, self.counters.step, write, trainer_state, is_main=is_main, barrier=barrier, keep=keep
        )

    def load(self, folder: str) -> None:
        """Restore everything from ``folder``; ``CheckpointError`` naming the file or the mismatch."""
        trainer = ckpt.read_checkpoint_file(folder, ckpt.TRAINER_STATE, ckpt.read_json)
        written_by = (trainer.get("world_size", self.world_size), trainer.get("engine", self.params.kind))
        if written_by != (self.world_size, self.params.kind):
            raise CheckpointError(
                f"checkpoint {folder!r} was written by {written_by[0]} process(es) under {written_by[1]}; this run has "
                f"{self.world_size} under {self.params.kind}. Resume with the launch that wrote it (same number of "
                "processes and the same accelerate config), or start a fresh results_dir."
            )
        rng = ckpt.read_checkpoint_file(folder, f"rng_rank{self.rank}.pt", ckpt.read_tensors)
        loader_state = ckpt.read_checkpoint_file(folder, f"loader_rank{self.rank}.json", ckpt.read_json)
        model_path = os.path.join(folder, ckpt.MODEL_FILE)
        model_state = ckpt.read_checkpoint_file(folder, ckpt.MODEL_FILE, load_file)
        if self.params.kind == "ddp":
            load_exact(self.params.module, model_state, model_path, "radio checkpoint", _OTHER_RUN)
        else:
            # DeepSpeed restores the module from its own shards; check the layout first for a clear message.
            _check_shapes(model_state, self.params.full_shapes(), model_path)
        normalizers_path = os.path.join(folder, ckpt.NORMALIZERS_FILE)
        normalizer_state = ckpt.read_checkpoint_file(folder, ckpt.NORMALIZERS_FILE, load_file)
        load_exact(self.loss_state, normalizer_state, normalizers_path, "radio checkpoint", _OTHER_RUN)
        self.params.load(folder)
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.loader.load_state_dict(loader_state)
        self.counters = Counters(**trainer["counters"])
        ckpt.set_rng_state(rng)  # last: building and loading above may draw random numbers


def _check_shapes(state: Dict[str, torch.Tensor], expected: Dict[str, tuple], path: str) -> None:
    report = LoadReport(path=path, fmt="radio checkpoint")
    compare_shapes({k: tuple(v.shape) for k, v in state.items()}, expected, report)
    if not report.ok:
        raise CheckpointError(f"{report.describe()}\n{_OTHER_RUN}")


def _to_cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # safetensors refuses shared storage; contiguous clones are cheap next to the write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
