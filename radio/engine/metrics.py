"""Where numbers go: ``metrics.jsonl`` always, TensorBoard and W&B when enabled (with what
``radio/report/dashboards.py`` says about the run around them). Main rank only."""

import json
import math
import os
import time
from typing import Dict, List, Optional

import torch

from radio.config.schema import LoggingConfig
from radio.report.dashboards import (
    RunDescription,
    describe_in_tensorboard,
    finish_tensorboard,
    finish_wandb,
    fresh_plots,
    open_wandb_run,
    run_summary,
    tensorboard_writer,
    wandb_identity,
)
from radio.run.layout import METRICS_FILE, read_metrics, read_run_status

WANDB_MODES = ("online", "offline")  # ``logging.wandb.mode``: wandb.init's modes a run may ask for


class MetricsLogger:
    """``description``: the run's tags, resolved config and requested mixture
    (``radio/engine/run_description.py``); every row also carries the requested shares as
    ``mixture_requested/<source>``, next to the realised ``mixture/<source>``. ``resume_step``: the step a
    resumed run continues from; rows logged after it by the interrupted run are dropped so every step
    appears once. ``close`` sends the summary and the plots."""

    def __init__(
        self,
        results_dir: str,
        cfg: LoggingConfig,
        *,
        enabled: bool,
        description: RunDescription,
        resume_step: int = 0,
    ):
        self.enabled = enabled
        self.results_dir = results_dir
        # Plots and run_status.json older than this are not this process's (2 s of margin: some filesystems
        # keep file times to the second).
        self.started = time.time() - 2.0
        self.requested = {f"mixture_requested/{k}": v for k, v in description.requested_mixture.items()}
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        os.makedirs(results_dir, exist_ok=True)
        path = os.path.join(results_dir, METRICS_FILE)
        _truncate_after(path, resume_step)
        self._jsonl = open(path, "a", buffering=1)
        if cfg.tensorboard:
            self._tb = tensorboard_writer(results_dir)
            describe_in_tensorboard(self._tb, *wandb_identity(results_dir, cfg.wandb), description, resume_step)
        if cfg.wandb.enable:
            self._wandb = open_wandb_run(results_dir, cfg.wandb, tags=description.tags, config=description.config)

    def log(self, step: int, values: Dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in {**values, **self.requested}.items()}
        self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None:
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in clean.items() if v is not None}, step=step)

    def close(self) -> None:
        """Ends the outputs; the dashboards get the run summary (status from a ``run_status.json`` this
        process wrote, else ``failed``) and the plots written by this process."""
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is None and self._wandb is None:
            return
        status = read_run_status(self.results_dir, newer_than=self.started) or "failed"
        summary = run_summary(read_metrics(self.results_dir), status)
        plots = fresh_plots(self.results_dir, self.started)
        if self._tb is not None:
            finish_tensorboard(self._tb, summary, plots)
            self._tb.close()
        if self._wandb is not None:
            finish_wandb(self._wandb, summary, plots)
            self._wandb.finish(exit_code=1 if status == "failed" else 0)


def _truncate_after(path: str, step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)


class MetricsWindow:
    """Accumulates one logging window in device tensors (adding adds no host sync); ``flush`` returns the
    all-rank means, the realised mixture per source, the window's images and images/s, and the summed data
    counters."""

    def __init__(self, source_names: List[str], device: torch.device, peak_tflops: Optional[float] = None):
        self.source_names = source_names
        self.device = device
        self.peak_tflops = peak_tflops  # per device; None: MFU is not logged
        self.reset()

    def reset(self) -> None:
        self.sums: Dict[str, torch.Tensor] = {}
        self.micro_steps = 0
        self.images = 0
        self.flops = 0.0
        # Kept where they are made: data counts and gradient norms on the host, loss sums on the device.
        self.skipped_terms = torch.zeros((), dtype=torch.float64, device=self.device)
        self.sources = torch.zeros(len(self.source_names), dtype=torch.float64)
        self.grad_norms: List[float] = []
        self.started = time.perf_counter()

    def _add(self, tag: str, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64)
        self.sums[tag] = self.sums[tag] + value if tag in self.sums else value

    def add(self, batch, result, flops: float) -> None:
        """batch: the data ``Batch``; result: the engine's ``MicroBatchLoss``, None for a micro-batch of a
        skipped (non-finite) step (its data counts, its losses do not); flops: model FLOPs spent on it."""
        self.images += len(batch.keys)
        self.flops += flops
        self.sources += torch.bincount(batch.sources.cpu(), minlength=len(self.source_names)).double()
        if result is None:
            return
        self.micro_steps += 1
        self._add("loss/total", result.loss)
        for tag, value in result.extra.items():
            self._add(tag, value)
        for name, parts in result.terms.items():
            for key, value in parts.items():
                self._add(f"loss/{name}" if key == "total" else f"loss/{name}/{key}", value)
        self.skipped_terms += result.skipped.sum()

    def add_grad_norm(self, value: float) -> None:
        self.grad_norms.append(float(value))

    def state_dict(self) -> dict:
        """The partial window, JSON-able (float64 values round-trip exactly): a run resumed mid-window logs
        what the uninterrupted run logs."""
        return {
            "sums": {k: v.item() for k, v in self.sums.items()},
            "counts": [self.micro_steps, self.images, self.flops, self.skipped_terms.item()],
            "sources": self.sources.tolist(),
            "grad_norms": list(self.grad_norms),
            "elapsed": time.perf_counter() - self.started,
        }

    def load_state_dict(self, state: dict) -> None:
        def tensor(value):
            return torch.tensor(value, dtype=torch.float64, device=self.device)

        self.sums = {k: tensor(v) for k, v in state["sums"].items()}
        self.micro_steps, self.images, self.flops, skipped = state["counts"]
        self.skipped_terms = tensor(skipped)
        self.sources = torch.tensor(state["sources"], dtype=torch.float64)
        self.grad_norms = [float(g) for g in state["grad_norms"]]
        self.started = time.perf_counter() - state["elapsed"]  # the time before the restart, not the downtime

    def flush(self, accelerator, counters: Dict[str, int]) -> Dict[str, float]:
        from radio.distributed import all_reduce_sum_
        from radio.engine.accel import sum_counters

        elapsed = time.perf_counter() - self.started
        keys = sorted(self.sums)  # the same keys on every rank: the same teachers
        host = torch.tensor([self.micro_steps, self.images, self.flops, *self.sources.tolist()], dtype=torch.float64)
        # A window of skipped (non-finite) steps has no sums; every rank agrees on skipping, so keys match.
        sums = [self.sums[k].reshape(1) for k in keys]
        packed = torch.cat([*sums, self.skipped_terms.reshape(1), host.to(self.device)])
        packed = all_reduce_sum_(packed).cpu().tolist()
        n = len(keys)
        sums, (skipped, micro_steps, images, flops), mix = packed[:n], packed[n : n + 4], packed[n + 4 :]
        values = {k: v / max(micro_steps, 1.0) for k, v in zip(keys, sums)}
        values["loss_terms_skipped"] = skipped
        values["images"] = images  # in the window, all ranks: their sum over the rows is the images seen
        for name, count in zip(self.source_names, mix):
            values[f"mixture/{name}"] = count / max(sum(mix), 1.0)
        values["images_per_s"] = images / max(elapsed, 1e-9)
        values["tflops_per_s"] = flops / max(elapsed, 1e-9) / 1e12  # model FLOPs, all ranks
        if self.peak_tflops:
            values["mfu"] = values["tflops_per_s"] / (self.peak_tflops * accelerator.num_processes)
        if self.grad_norms:
            values["grad_norm"] = math.fsum(self.grad_norms) / len(self.grad_norms)
        for key, value in sum_counters(accelerator, counters).items():
            values[f"data/{key}"] = value
        self.reset()
        return values
