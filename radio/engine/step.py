"""One optimizer step, the same under DDP, one process and DeepSpeed ZeRO.

For each micro-batch the teachers compute their outputs, which feed the target normalisers' statistics; on
the step's first micro-batch the normalisers that are due refresh and re-base their spatial heads (the
one place trained weights change outside the optimizer). Then the targets are normalised, the student runs inside
``accelerator.accumulate`` and the loss is backpropagated — times NaN when it is not finite, so that a bad
micro-batch on any rank makes the step's all-reduced gradients non-finite on every rank. After the last
micro-batch the gradient norm decides: finite, the optimizer steps; otherwise the step is skipped on every
rank. Reading the norm is the step's one host synchronisation, and the ranks' stop requests travel with it
(``agree_on_step``); nothing reads the device per micro-batch. Under ZeRO, DeepSpeed has already stepped (or skipped, on its own overflow
check) inside the last backward and reports the norm it computed (inf when it skipped); its
``optimizer.step()`` is a no-op.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from radio.data.device_decode import with_device_images
from radio.data.loader import Batch
from radio.data.views import make_view
from radio.distributed import all_reduce_max_
from radio.models.vitdet import choose_window
from radio.phases import NO_PHASES


@dataclass
class StepOutcome:
    last_batch: Batch
    grad_norm: Optional[float]  # None: the loss or the gradients were non-finite and the step was skipped
    skipped: torch.Tensor  # bool [teachers] on the device: a term was left out in some micro-batch (this rank)
    stop: bool  # some rank asked to stop (agreed with the gradient norm, in the step's one host read)


class TrainStep:
    def __init__(
        self,
        accelerator,
        model,
        optimizer,
        objective,
        plan,
        vitdet_cfg,
        step_flops,
        *,
        seed: int,
        accum: int,
        clip_grad_norm: Optional[float],
        input_dtype: torch.dtype,
        stop_requested: Callable[[], bool] = lambda: False,
        phases=NO_PHASES,
    ):
        self.accelerator, self.model, self.optimizer, self.objective = accelerator, model, optimizer, objective
        self.step_flops = step_flops  # model FLOPs per image, for the logged TFLOP/s
        self.plan, self.vitdet_cfg, self.seed, self.accum = plan, vitdet_cfg, seed, accum
        self.max_grad_norm = clip_grad_norm or math.inf  # inf: measure the norm for logging, clip nothing
        self.input_dtype = input_dtype  # bf16 under DeepSpeed bf16 (the module is cast, autocast is off)
        self.stop_requested = stop_requested  # this rank's stop request (engine/stop.py), read once per step
        self.phases = phases  # radio/phases.py: timed only by benchmarks

    def __call__(self, data, step: int, window) -> StepOutcome:
        """Run optimizer step ``step`` (0-based) on the next ``accum`` batches of ``data``."""
        accelerator, device, student_view = self.accelerator, self.accelerator.device, self.plan.student
        phase = self.phases.phase
        skipped = None
        done = []
        for micro in range(self.accum):
            with phase("data_wait"):
                batch = next(data)
            with phase("h2d"):  # and, with dataset.decode_on_device, the batch's JPEG crops decoded there
                batch = with_device_images(batch, batch.images.to(device, non_blocking=True))
                images = batch.images
            outputs = self.objective.teacher_outputs(images, batch.sizes, self.phases)
            with phase("normalizers"):
                self.objective.observe(outputs, starts_step=micro == 0)
                if micro == 0:
                    self.objective.refresh_targets()  # may re-base spatial heads: before any gradient of the step
                targets = self.objective.targets(outputs)
            with phase("student_forward_backward"):
                student_x = make_view(images, batch.sizes["student"], student_view.mean, student_view.std)
                vitdet_window = choose_window(self.vitdet_cfg, step * self.accum + micro, self.seed)
                # accumulate(): DDP syncs gradients, and DeepSpeed steps, only on the step's last micro-batch.
                with accelerator.accumulate(self.model), accelerator.autocast():
                    preds = self.model(student_x.to(self.input_dtype), vitdet_window=vitdet_window)
                    result = self.objective(preds, targets, batch.labels.to(device))
                    accelerator.backward(poisoned_if_nonfinite(result.loss))
            done.append((batch, result))
            skipped = result.skipped if skipped is None else skipped | result.skipped
        with phase("optimizer"):
            grad_norm, stop = optimizer_step(
                accelerator, self.model, self.optimizer, self.max_grad_norm, self.stop_requested()
            )
            finite = math.isfinite(grad_norm)
        with phase("metrics"):
            if finite:
                window.add_grad_norm(grad_norm)
            for batch, result in done:  # a skipped step's data counts, its (non-finite) losses are not averaged
                flops = self.step_flops.per_image(batch.sizes) * len(batch.keys)
                window.add(batch, result if finite else None, flops)
        return StepOutcome(batch, grad_norm if finite else None, skipped, stop)


def optimizer_step(accelerator, model, optimizer, max_grad_norm: float, stop_requested: bool) -> Tuple[float, bool]:
    """After the step's last backward: clip, agree on the norm and the stop (``agree_on_step``), step when the
    norm is finite (skipped on every rank otherwise), clear the gradients. Returns (norm, any rank stops)."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    grad_norm, stop = agree_on_step(accelerator, grad_norm, stop_requested)
    if math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, stop


def agree_on_step(accelerator, grad_norm, stop_requested: bool) -> Tuple[float, bool]:
    """(gradient norm, does any rank want to stop): the step's one host synchronisation.

    The gradients are all-reduced, so the norm is the same on every rank; it travels with this rank's
    stop request in one two-value all-reduce (max), so the stop agreement costs no extra collective or
    host read. A non-finite norm is sent as +inf (max would not carry NaN reliably).
    """
    local = 1.0 if stop_requested else 0.0
    if accelerator.num_processes == 1:
        return float(grad_norm), bool(local)
    norm = torch.as_tensor(grad_norm, device=accelerator.device).float().reshape(())
    norm = torch.nan_to_num(norm, nan=math.inf, posinf=math.inf, neginf=math.inf)
    packed = all_reduce_max_(torch.stack([norm, torch.full_like(norm, local)]))
    grad_norm, stop = packed.tolist()
    return grad_norm, stop > 0


def poisoned_if_nonfinite(loss: torch.Tensor) -> torch.Tensor:
    """``loss``, times NaN where it is not finite: its gradients are then NaN (a NaN constant term could
    leave them finite), the all-reduced gradients are non-finite on every rank, and the step is skipped
    everywhere from the norm alone, with no extra collective or host sync per micro-batch."""
    return loss * torch.where(torch.isfinite(loss.detach()), 1.0, math.nan)
