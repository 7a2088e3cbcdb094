"""The run's state as one object: everything a checkpoint holds, saved and restored together.

- the trained module (student + heads), through ``params`` (``engine/params.py``): consolidated fp32 in
  ``model.safetensors``; the optimizer in ``optimizer.pt`` (DDP) or DeepSpeed's sharded ``deepspeed/``;
- the loss state (normaliser statistics, criteria running statistics);
- the LR scheduler and the loop counters, the world size and engine that wrote them;
- per rank: the data loader's position, the RNG streams and the logging window in progress.
"""

import os
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from radio.engine import checkpoint as ckpt
from radio.errors import CheckpointError, on_every_rank
from radio.models.checkpoint_io import LoadReport, compare_shapes, load_exact
from radio.run.layout import MODEL_FILE, NORMALIZERS_FILE, TRAINER_STATE, checkpoints_root, rank_files

_OTHER_RUN = (
    "The checkpoint was written by a run with other teachers, heads or student; resume with the spec that "
    "wrote it, or use a fresh results_dir (or train.resume_training_checkpoint_path of a matching run). A "
    "teacher without `name` is named by its registry short name (`radio models`); a checkpoint whose keys "
    "carry a teacher's full backbone type (written before short names) resumes with that teacher's `name` set "
    "to it."
)


_ENGINES = {"ddp": "DDP (or one process)", "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3"}


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
    def __init__(
        self, params, loss_state: nn.Module, scheduler, loader, window, *, rank: int, world_size: int, total_steps: int
    ):
        self.params = params
        self.loss_state = loss_state
        self.scheduler = scheduler
        self.loader = loader
        # The loader's state after the last batch trained on (Batch.position); None: the loader's own state
        # (nothing trained since it was built or resumed). A prefetcher reads ahead, so this is what to save.
        self.position: Optional[dict] = None
        self.window = window  # the logging window in progress (engine/metrics.MetricsWindow)
        self.rank = rank
        self.world_size = world_size
        self.counters = Counters()
        # The explicit resume_training_checkpoint_path this run's lineage started from (ckpt.resume_candidates).
        self.origin: Optional[str] = None
        self.total_steps = total_steps  # the schedule's length, saved so a resume can say when it changed
        self.saved_total_steps: Optional[int] = None  # what the loaded checkpoint's run planned

    def save(self, results_dir: str, *, agree: Callable[[Optional[str]], Optional[str]], keep: int) -> str:
        """Write a checkpoint of the current step on every rank (a collective); returns its folder."""
        model_state = self.params.full_state_dict()  # a collective under ZeRO
        is_main = self.rank == 0

        def write(folder: str) -> List[str]:
            written = [os.path.join(folder, name) for name in rank_files(self.rank)]
            torch.save(ckpt.rng_state(), written[0])
            ckpt.write_json(written[1], self.position if self.position is not None else self.loader.state_dict())
            ckpt.write_json(written[2], self.window.state_dict())
            # Statistics are merged at the normaliser's own refreshes only: merging them here would change
            # the float64 summation order, and a run checkpointed off-schedule (a stop) would drift.
            save_file(_to_cpu(_pending(self.loss_state.state_dict())), written[3])
            written += self.params.save(folder, is_main=is_main)
            if is_main:
                for name, state in (
                    (MODEL_FILE, model_state),
                    (NORMALIZERS_FILE, self.loss_state.state_dict()),
                ):
                    written.append(os.path.join(folder, name))
                    save_file(_to_cpu(state), written[-1])
            return written

        trainer_state = {
            "counters": asdict(self.counters),
            "scheduler": self.scheduler.state_dict(),
            "world_size": self.world_size,
            "engine": self.params.kind,
            "origin": self.origin,
            "total_steps": self.total_steps,
        }
        return ckpt.save_checkpoint(
            results_dir, self.counters.step, write, trainer_state, is_main=is_main, agree=agree, keep=keep
        )

    def load(self, folder: str) -> None:
        """Restore everything from ``folder``; ``CheckpointError`` naming the file or the mismatch."""
        trainer = ckpt.read_checkpoint_file(folder, TRAINER_STATE, ckpt.read_json)
        trainer_path = os.path.join(folder, TRAINER_STATE)
        if not isinstance(trainer, dict) or not {"counters", "scheduler"} <= set(trainer):
            raise CheckpointError(f"{trainer_path} is damaged: it must be an object with counters and scheduler.")
        written_by = (trainer.get("world_size", self.world_size), trainer.get("engine", self.params.kind))
        if written_by != (self.world_size, self.params.kind):
            raise CheckpointError(
                f"checkpoint {folder!r} was written by {written_by[0]} process(es) under "
                f"{_ENGINES.get(written_by[1], written_by[1])}; this run has {self.world_size} under "
                f"{_ENGINES[self.params.kind]}. Resume with the launch that wrote it (same number of processes and "
                "the same accelerate config), or start a fresh results_dir."
            )
        rng_file, loader_file, window_file, pending_file = rank_files(self.rank)
        rng = ckpt.read_checkpoint_file(folder, rng_file, ckpt.read_tensors)
        loader_state = ckpt.read_checkpoint_file(folder, loader_file, ckpt.read_json)
        window_state = ckpt.read_checkpoint_file(folder, window_file, ckpt.read_json)
        model_path = os.path.join(folder, MODEL_FILE)
        model_state = ckpt.read_checkpoint_file(folder, MODEL_FILE, load_file)
        if self.params.kind == "ddp":
            load_exact(self.params.module, model_state, model_path, "radio checkpoint", _OTHER_RUN)
        else:
            # DeepSpeed restores the module from its own shards; check the layout first for a clear message.
            _check_shapes(model_state, self.params.full_shapes(), model_path)
        normalizers_path = os.path.join(folder, NORMALIZERS_FILE)
        normalizer_state = ckpt.read_checkpoint_file(folder, NORMALIZERS_FILE, load_file)
        pending = ckpt.read_checkpoint_file(folder, pending_file, load_file)
        if set(pending) != set(_pending(normalizer_state)):
            raise CheckpointError(f"{folder}/{pending_file} does not hold this run's normaliser statistics.")
        # The shared statistics from the main rank's file, this rank's own unmerged sums from its file.
        load_exact(self.loss_state, {**normalizer_state, **pending}, normalizers_path, "radio checkpoint", _OTHER_RUN)
        try:
            counters = Counters(**trainer["counters"])
            scheduler = dict(trainer["scheduler"])
        except (TypeError, ValueError) as exc:
            valid = ", ".join(f.name for f in fields(Counters))
            raise CheckpointError(f"{trainer_path} is damaged ({exc}); counters must hold {valid}.") from None
        self.params.load(folder)
        self.scheduler.load_state_dict(scheduler)
        self.loader.load_state_dict(loader_state)
        try:
            self.window.load_state_dict(window_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{folder}/{rank_files(self.rank)[2]} is damaged ({exc!r}).") from None
        self.counters = counters
        self.origin = trainer.get("origin")
        self.saved_total_steps = trainer.get("total_steps")
        ckpt.set_rng_state(rng)  # last: building and loading above may draw random numbers


def resume(state: RunState, results_dir: str, explicit: Optional[str], *, agree, is_main: bool, say) -> Optional[str]:
    """Load the best usable checkpoint into ``state`` on every rank; returns its folder (None: fresh start).

    A checkpoint any rank cannot load is reported and the previous one tried (all ranks together, ``agree``);
    once one loads, the newer step folders — damaged, incomplete, or superseded by an explicit
    ``resume_training_checkpoint_path`` — are renamed aside (``step_0000006.damaged``; nothing is deleted),
    so later saves and restarts never meet them. ``say``: print on the main rank.
    """
    candidates, from_explicit = ckpt.resume_candidates(results_dir, explicit)
    failed: Dict[str, str] = {}
    for path in candidates:
        try:
            state.load(path)
            error = None
        except CheckpointError as exc:
            error = str(exc)
        error = agree(error)
        if error is not None:
            failed[path] = error
            if from_explicit:
                raise on_every_rank(
                    CheckpointError(f"train.resume_training_checkpoint_path={path!r} cannot be used: {error}")
                )
            say(f"warning: checkpoint {path} cannot be used: {error}")
            continue
        if from_explicit:
            state.origin = os.path.realpath(path)
        if is_main:
            for newer in ckpt.step_folders_after(results_dir, state.counters.step):
                complete = os.path.isfile(os.path.join(newer, TRAINER_STATE))
                why = "damaged" if newer in failed else "superseded" if complete else "incomplete"
                say(f"note: {newer} set aside as {os.path.basename(ckpt.set_aside(newer, why))}")
        agree(None)
        return path
    if failed:
        listing = "\n".join(f"  {path}: {why}" for path, why in failed.items())
        raise on_every_rank(
            CheckpointError(
                f"no checkpoint in {checkpoints_root(results_dir)} can be loaded:\n{listing}\nRepair or move them "
                "aside to start fresh, or use another results_dir."
            )
        )
    return None


def _check_shapes(state: Dict[str, torch.Tensor], expected: Dict[str, tuple], path: str) -> None:
    report = LoadReport(path=path, fmt="radio checkpoint")
    compare_shapes({k: tuple(v.shape) for k, v in state.items()}, expected, report)
    if not report.ok:
        raise CheckpointError(f"{report.describe()}\n{_OTHER_RUN}")


def _pending(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The per-rank part of the loss state: normaliser sums not yet merged across ranks."""
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1].startswith("pending_")}


def _to_cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # safetensors refuses shared storage; contiguous clones are cheap next to the write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
