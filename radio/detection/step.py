"""One optimizer step of detection distillation, under one process, DDP or DeepSpeed ZeRO alike.

Per micro-batch: the teacher's signals without autograd, then the trained ``DetectionDistiller`` (student
detector + projections) computes detection loss + distillation inside ``accelerator.accumulate``, and the loss is
backpropagated — poisoned to NaN when not finite, so every rank skips the step (``radio/engine/step.py``). The
gradient norm and the ranks' stop requests are agreed in the step's one host read (``optimizer_step``).
"""

import math
from typing import Callable, Optional

import torch

from radio.engine.step import StepOutcome, optimizer_step, poisoned_if_nonfinite


class DetectionStep:
    def __init__(
        self,
        accelerator,
        model,
        optimizer,
        teacher,
        *,
        accum: int,
        clip_grad_norm: Optional[float],
        input_dtype: torch.dtype,
        stop_requested: Callable[[], bool] = lambda: False,
    ):
        self.accelerator, self.model, self.optimizer, self.teacher = accelerator, model, optimizer, teacher
        self.accum = accum
        self.max_grad_norm = clip_grad_norm or math.inf  # inf: measure the norm for logging, clip nothing
        self.input_dtype = input_dtype  # bf16 under DeepSpeed bf16 (the module is cast, autocast is off)
        self.stop_requested = stop_requested

    def __call__(self, data, window) -> StepOutcome:
        accelerator = self.accelerator
        done = []
        for _ in range(self.accum):
            batch = next(data).to(accelerator.device)
            signals = self.teacher(batch.pixel_values, batch.labels) if self.teacher is not None else None
            with accelerator.accumulate(self.model), accelerator.autocast():
                result = self.model(batch.pixel_values.to(self.input_dtype), batch.labels, signals)
                accelerator.backward(poisoned_if_nonfinite(result.loss))
            done.append((batch, result))
        grad_norm, stop = optimizer_step(
            accelerator, self.model, self.optimizer, self.max_grad_norm, self.stop_requested()
        )
        finite = math.isfinite(grad_norm)
        if finite:
            window.add_grad_norm(grad_norm)
        for micro_batch, result in done:  # a skipped step's images count, its (non-finite) losses are not averaged
            window.add(micro_batch, result if finite else None, 0.0)
        return StepOutcome(batch, grad_norm if finite else None, torch.zeros(0, dtype=torch.bool), stop)
