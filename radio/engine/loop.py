"""The training loop: build from the resolved config, resume if a checkpoint exists, then step."""

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, List, Optional

import torch

from radio.data.loader import Batch
from radio.data.prefetch import DevicePrefetcher
from radio.engine.accel import build_accelerator, first_error, uses_deepspeed
from radio.engine.console import PlainProgressLog
from radio.engine.flops import peak_tflops, step_flops
from radio.engine.lock import ResultsDirLock
from radio.engine.metrics import MetricsLogger, MetricsWindow
from radio.engine.objective import DistillationObjective
from radio.engine.optim import advance_schedule, build_optimizer, build_scheduler
from radio.engine.outputs import write_final_outputs
from radio.engine.params import ReplicatedParams, ZeroParams
from radio.engine.run_description import describe_run
from radio.engine.run_state import RunState, resume
from radio.engine.step import TrainStep
from radio.engine.stop import StopRequest
from radio.engine.targets import SpatialTargets
from radio.engine.threads import available_cores, torch_threads
from radio.errors import RadioError, on_every_rank
from radio.phases import NO_PHASES
from radio.run.build import Components, build_components
from radio.run.layout import (
    STOP_FILE,
    checkpoints_root,
    write_resolved_config,
    write_run_status,
    write_teachers_file,
)
from radio.run.spec import check_paths
from radio.run.teacher_report import teacher_load_lines, teacher_load_records
from radio.run.teachers import resolution_notes, resolve_teachers


@dataclass
class Instrumentation:
    """Benchmark hooks (``tools/bench/step_throughput.py``); a normal run uses none of them.

    ``phases``: times the step's parts (``radio/phases.py``). ``batches``: replaces the loader's batch
    stream, given it (e.g. by batches decoded once and replayed). ``after_step(step)``: called after every
    optimizer step, once its bookkeeping is done.
    """

    phases: object = NO_PHASES
    batches: Optional[Callable[[Iterator[Batch]], Iterator[Batch]]] = None
    after_step: Optional[Callable[[int], None]] = None


@dataclass
class RunResult:
    results_dir: str
    steps: int
    resumed_from: Optional[str] = None
    stopped_early: bool = False
    teacher_names: List[str] = field(default_factory=list)


def run(cfg, stop: Optional[StopRequest] = None, instrument: Optional[Instrumentation] = None) -> RunResult:
    """Train until done or asked to stop (``stop``: installed by the caller before start-up, so a signal
    during start-up counts; one is made here otherwise). ``instrument``: benchmark hooks."""
    if stop is None:
        stop = StopRequest()
        try:
            return run(cfg, stop, instrument)
        finally:
            stop.restore()  # a caller's handlers stay until its process exits: a late signal is no crash
    check_paths(cfg)
    if cfg.task == "detection":
        from radio.detection.task import DetectionTask

        task = DetectionTask(cfg)
    else:
        task = BackboneTask(cfg)
    accelerator = build_accelerator(cfg.train, cfg.dataset.batch_size)
    agree = partial(first_error, accelerator)
    lock = ResultsDirLock(cfg.results_dir)
    in_use = agree(lock.acquire() if accelerator.is_main_process else None)
    if in_use:
        raise on_every_rank(RadioError(in_use))
    try:
        return _run_locked(cfg, task, accelerator, agree, stop, instrument or Instrumentation())
    finally:
        lock.release()


class BackboneTask:
    """What backbone distillation adds to the loop: its teachers, components, trainer and outputs. A task
    gives ``notes``, ``build`` (-> a trainer with ``loader``, ``state``, ``params``, ``loss_names``,
    ``step(data)``, ``window_values(outcome, lr)`` and ``after_step(step, log)``), ``write_start_files``,
    ``describe`` and ``write_final_outputs`` (``radio/detection/task.py`` is the other)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.teachers_cfg = resolve_teachers(cfg)
        self.parts: Optional[Components] = None

    def notes(self) -> List[str]:
        return resolution_notes(self.cfg, self.teachers_cfg)

    def build(self, accelerator, phases, stop: StopRequest) -> "_Trainer":
        cfg = self.cfg
        self.parts = build_components(
            cfg,
            self.teachers_cfg,
            device=accelerator.device,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        for line in teacher_load_lines(self.parts.teachers):
            accelerator.print(line)
        total_steps, steps_per_epoch = run_length(cfg.train, self.parts.loader.steps_per_epoch, accelerator.print)
        return _Trainer(cfg, self.teachers_cfg, accelerator, self.parts, total_steps, steps_per_epoch, phases, stop)

    def write_start_files(self) -> None:
        write_resolved_config(self.cfg, self.teachers_cfg, self.cfg.results_dir)
        write_teachers_file(self.cfg.results_dir, teacher_load_records(self.parts.teachers))

    def describe(self, accelerator):
        return describe_run(self.cfg, self.teachers_cfg, self.parts.loader, accelerator)

    def write_final_outputs(self, trainer: "_Trainer", trained_state: dict) -> None:
        write_final_outputs(self.cfg, trainer.trainable.student, trained_state, self.teachers_cfg, self.cfg.results_dir)

    def result(self, results_dir: str, steps: int, resumed_from: Optional[str], stopped_early: bool) -> RunResult:
        return RunResult(results_dir, steps, resumed_from, stopped_early, [t.name for t in self.teachers_cfg])


def _run_locked(cfg, task, accelerator, agree, stop: StopRequest, instrument: Instrumentation) -> RunResult:
    results_dir, train, is_main = cfg.results_dir, cfg.train, accelerator.is_main_process
    phase = instrument.phases.phase
    _start_up_notes(cfg, task.notes(), accelerator, stop)
    _set_torch_threads(cfg, accelerator)
    trainer = task.build(accelerator, instrument.phases, stop)
    total_steps, steps_per_epoch = trainer.total_steps, trainer.steps_per_epoch
    state = trainer.state
    resumed_from = resume(
        state, results_dir, train.resume_training_checkpoint_path, agree=agree, is_main=is_main, say=accelerator.print
    )
    counters = state.counters  # restored by resume()
    if resumed_from:
        accelerator.print(f"resumed from {resumed_from} at step {counters.step}")
        _note_schedule_change(state, accelerator.print)
    if is_main:  # only now: a launch refused above must not leave its config next to another run's checkpoints
        task.write_start_files()

    def save() -> str:
        return state.save(results_dir, agree=agree, keep=train.keep_checkpoints)

    def result(stopped_early: bool) -> RunResult:
        return task.result(results_dir, counters.step, resumed_from, stopped_early)

    logger = MetricsLogger(
        results_dir,
        cfg.logging,
        enabled=is_main,
        description=task.describe(accelerator),
        resume_step=counters.step,
    )
    progress = _progress_bar(cfg, is_main, total_steps, counters.step)
    # Without a bar, one plain line per logging window says how far the run is.
    plain_log = None
    if is_main and progress is None:
        plain_log = PlainProgressLog(total_steps, counters.step, trainer.loss_names)
    loader_batches = iter(trainer.loader)
    data = trainer.on_device(instrument.batches(loader_batches) if instrument.batches else loader_batches)
    try:
        if stop.agreed(accelerator, results_dir):  # asked during start-up
            return _stopped(stop, accelerator, results_dir, counters.step, progress, result, saved=False)
        while counters.step < total_steps:
            outcome, lr = trainer.step(data)
            step = counters.step
            if progress is not None:
                progress.update(1)
            if step % train.log_every_n_steps == 0 or step == total_steps:
                with phase("metrics"):
                    values = trainer.window_values(outcome, lr)
                    logger.log(step, values)
                if progress is not None and "loss/total" in values:  # absent when every step was skipped
                    progress.set_postfix(loss=f"{values['loss/total']:.4f}")
                if plain_log is not None:
                    print(plain_log.line(step, values), flush=True)
            trainer.after_step(step, logger.log)  # before a stop: what is due at this step (validation) is not lost
            if outcome.stop:  # agreed inside the step, with its gradient norm
                save()
                return _stopped(stop, accelerator, results_dir, step, progress, result, saved=True)
            if step < total_steps and _checkpoint_due(train, step, steps_per_epoch):
                with phase("checkpoint"):
                    save()
            if instrument.after_step is not None:
                instrument.after_step(step)
        save()
        trained_state = trainer.params.full_state_dict()  # every rank: a collective under ZeRO
        if is_main:
            task.write_final_outputs(trainer, trained_state)
            write_run_status(results_dir, "finished", counters.step)
    finally:
        loader_batches.close()  # ends the DataLoader workers now, whatever ended the run
        logger.close()
        if progress is not None:
            progress.close()
    accelerator.wait_for_everyone()
    return result(stopped_early=False)


class _Trainer:
    """The prepared pieces of one run: the trained module as the engine wraps it, its optimizer and
    schedule, the run's state, and one optimizer step with its bookkeeping."""

    def __init__(
        self,
        cfg,
        teachers_cfg,
        accelerator,
        parts: Components,
        total_steps: int,
        steps_per_epoch: int,
        phases,
        stop: StopRequest,
    ):
        train = cfg.train
        self.cfg, self.train, self.accelerator, self.parts = cfg, train, accelerator, parts
        self.total_steps, self.steps_per_epoch, self.loader = total_steps, steps_per_epoch, parts.loader
        self.results_dir = cfg.results_dir
        self.teacher_names = [t.name for t in teachers_cfg]
        self.loss_names = self.teacher_names  # the losses the plain log line shows
        if train.compile:
            # In place (nn.Module.compile), so state_dict keys and checkpoints stay the same as eager.
            parts.model.compile()
        optimizer = build_optimizer(parts.model, train.optim)
        self.scheduler = build_scheduler(optimizer, train.optim, total_steps, steps_per_epoch)
        # Only the trained module is prepared (wrapped by DDP or sharded by ZeRO); teachers stay as built.
        model, optimizer = accelerator.prepare(parts.model, optimizer)
        self.trainable = accelerator.unwrap_model(model)
        zero = uses_deepspeed(accelerator)
        self.params = (
            ZeroParams(model, accelerator.process_index) if zero else ReplicatedParams(self.trainable, optimizer)
        )
        self.window = MetricsWindow(parts.loader.source_names, accelerator.device, peak_tflops(accelerator.device))
        self.state = RunState(
            self.params,
            parts.loss_state,
            self.scheduler,
            parts.loader,
            self.window,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            total_steps=total_steps,
        )
        targets = SpatialTargets(parts.normalizers, self.trainable.spatial_heads, self.params)
        self.train_step = TrainStep(
            accelerator,
            model,
            optimizer,
            DistillationObjective(teachers_cfg, parts.teachers, parts.criteria, targets),
            parts.plan,
            cfg.distill.vitdet,
            step_flops(self.trainable.student, teachers_cfg, parts.teachers),
            seed=train.seed,
            accum=train.grad_accumulation_steps,
            clip_grad_norm=train.clip_grad_norm,
            # DeepSpeed casts the module itself to bf16 (autocast does nothing there): inputs must follow.
            input_dtype=torch.bfloat16 if zero and train.precision == "bf16" else torch.float32,
            stop_requested=lambda: stop.reason(cfg.results_dir) is not None,
            phases=phases,
        )
        model.train()

    def step(self, data):
        """One optimizer step, the schedule and the counters; stops the run after too many non-finite steps.
        Returns the step's outcome and the learning rate it used."""
        outcome = self.train_step(data, self.state.counters.step, self.window)

        def skipped() -> List[str]:  # a device read: only once the run stops on it
            return [name for name, left_out in zip(self.teacher_names, outcome.skipped.tolist()) if left_out]

        return outcome, count_step(self.state, self.scheduler, outcome, self.train, self.results_dir, skipped)

    def on_device(self, batches):
        """The batches as the step reads them: on a GPU with ``dataset.device_prefetch``, the next one's copy
        overlaps the current step."""
        if self.cfg.dataset.device_prefetch and self.accelerator.device.type == "cuda":
            return DevicePrefetcher(batches, self.accelerator.device)
        return batches

    def after_step(self, step: int, log) -> None:
        """Nothing between steps for backbone distillation (detection evaluates here)."""

    def window_values(self, outcome, lr: float) -> dict:
        """The logging window's all-rank values (a collective), plus the learning rate and loss state."""
        values = self.window.flush(self.accelerator, outcome.last_batch.counters)
        values.update({"lr": lr, "nonfinite_skipped_total": self.state.counters.nonfinite_total})
        # The last step's view sizes: with stochastic resolutions, what was drawn.
        values.update({f"size/{name}": size for name, size in outcome.last_batch.sizes.items()})
        for group, modules in (("normalizer", self.parts.normalizers), ("criterion", self.parts.criteria)):
            for name, module in modules.items():
                values.update({f"{group}/{name}/{k}": v for k, v in module.log_values().items()})
        return values


def _set_torch_threads(cfg, accelerator) -> None:
    """Intra-op threads for this process (``engine/threads.py``), said when the node is oversubscribed."""
    threads, contention = torch_threads(
        cfg.train.torch_threads,
        cores=available_cores(),
        processes=int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)),
        workers=cfg.dataset.workers,
        environment=os.environ.get("OMP_NUM_THREADS"),
    )
    torch.set_num_threads(threads)
    if contention:
        accelerator.print(contention)


def _start_up_notes(cfg, notes: List[str], accelerator, stop: StopRequest) -> None:
    train = cfg.train
    for note in notes:
        accelerator.print(note)
    if accelerator.is_main_process and stop.clear_stale_stop_file(cfg.results_dir):
        print(f"note: removed {cfg.results_dir}/{STOP_FILE}, left from before this run started.")
    if accelerator.num_processes != train.num_gpus * train.num_nodes:
        accelerator.print(
            f"note: running {accelerator.num_processes} process(es) as launched; train.num_gpus x train.num_nodes "
            f"says {train.num_gpus * train.num_nodes} (the launcher decides)."
        )


def count_step(
    state: RunState, scheduler, outcome, train, results_dir: str, skipped_teachers: Callable[[], List[str]]
) -> float:
    """The bookkeeping after an optimizer step, for every task: the loader position to checkpoint, the schedule,
    the counters; the run stops after ``train.max_consecutive_nonfinite`` skipped steps in a row, naming the
    teachers whose terms were left out (``skipped_teachers()``, read only then). Returns the learning rate the
    step used."""
    counters = state.counters
    state.position = outcome.last_batch.position
    lr = scheduler.get_last_lr()[0]
    advance_schedule(scheduler)
    counters.count_step(applied=outcome.grad_norm is not None)
    if counters.nonfinite_streak >= train.max_consecutive_nonfinite:
        raise on_every_rank(RadioError(nonfinite_message(counters, train, results_dir, skipped_teachers())))
    return lr


def run_length(train, loader_steps_per_epoch: int, say) -> tuple:
    """(total optimizer steps, optimizer steps per epoch)."""
    steps_per_epoch = max(1, loader_steps_per_epoch // train.grad_accumulation_steps)
    total_steps = train.num_epochs * steps_per_epoch
    if train.max_steps and train.max_steps > total_steps:
        say(
            f"note: train.max_steps={train.max_steps} is more than the {total_steps} steps of train.num_epochs="
            f"{train.num_epochs} x {steps_per_epoch} steps per epoch; the run ends at {total_steps} (max_steps "
            "only shortens a run: raise train.num_epochs for a longer one)."
        )
    return min(total_steps, train.max_steps or total_steps), steps_per_epoch


def _note_schedule_change(state: RunState, say) -> None:
    """A resume whose schedule length differs (num_epochs or max_steps changed) moves the learning rate."""
    saved, scheduler = state.saved_total_steps, state.scheduler
    if saved is None or saved == state.total_steps:
        return
    step = state.counters.step
    new_lr = scheduler.base_lrs[0] * scheduler.lr_lambdas[0](step)
    say(
        f"note: the learning-rate schedule now spans {state.total_steps} steps (the checkpoint's run planned "
        f"{saved}); from step {step} the rate follows the new schedule: {new_lr:.3g} (it was "
        f"{scheduler.get_last_lr()[0]:.3g})."
    )


def _stopped(stop, accelerator, results_dir: str, step: int, progress, result, *, saved: bool) -> RunResult:
    if progress is not None:
        progress.close()  # the message on a line of its own
    why = stop.reason(results_dir) or "another rank"
    if accelerator.is_main_process:
        StopRequest.consume_stop_file(results_dir)
        write_run_status(results_dir, "stopped", step, why)
    where = "checkpoint written" if saved else "nothing trained since the last checkpoint"
    accelerator.print(f"stop requested ({why}): {where} at step {step}; run the same command to resume")
    return result(stopped_early=True)


def nonfinite_message(counters, train, results_dir: str, skipped_teachers: List[str]) -> str:
    advice = "Lower train.optim.lr or set train.clip_grad_norm"
    if train.precision != "fp32":
        advice += ", or use train.precision=fp32"
    if skipped_teachers:
        advice = (
            f"Non-finite terms in the last step came from teacher(s) {', '.join(sorted(skipped_teachers))}: "
            "if a teacher's outputs are NaN/inf, check its pretrained_teacher_model_path weights. Otherwise: " + advice
        )
    return (
        f"the loss or its gradients were non-finite for {counters.nonfinite_streak} optimizer steps in a row "
        f"(the last at step {counters.step}); stopping. {advice}; the newest checkpoint is in "
        f"{checkpoints_root(results_dir)}."
    )


def _checkpoint_due(train, step: int, steps_per_epoch: int) -> bool:
    if train.checkpoint_interval_steps and step % train.checkpoint_interval_steps == 0:
        return True
    epochs_done, epoch_end = divmod(step, steps_per_epoch)
    return bool(train.checkpoint_interval) and epoch_end == 0 and epochs_done % train.checkpoint_interval == 0


def _progress_bar(cfg, is_main: bool, total: int, initial: int):
    if not (is_main and cfg.logging.progress_bar):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="distill", unit="step", dynamic_ncols=True)
