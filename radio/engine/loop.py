"""The training loop: build from the resolved config, resume if a checkpoint exists, then step."""

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from omegaconf import OmegaConf

from radio.config.resolve import resolve_teachers
from radio.config.validate import check_paths
from radio.data.views import make_view
from radio.engine import checkpoint as ckpt
from radio.engine.accel import build_accelerator, reduce_sum
from radio.engine.build import build_components
from radio.engine.flops import StepFlops, VitShape, peak_tflops
from radio.engine.metrics import MetricsLogger, MetricsWindow
from radio.engine.objective import DistillationObjective
from radio.engine.optim import build_optimizer, build_scheduler
from radio.engine.outputs import write_final_outputs, write_resolved_config
from radio.engine.stop import StopRequest
from radio.engine.targets import SpatialTargets
from radio.errors import RadioError
from radio.models.checkpoint_io import load_exact
from radio.models.registry import get_model_info
from radio.models.vitdet import choose_window


@dataclass
class RunResult:
    results_dir: str
    steps: int
    resumed_from: Optional[str] = None
    stopped_early: bool = False
    teacher_names: List[str] = field(default_factory=list)


@dataclass
class Counters:
    """Loop counters that a checkpoint carries."""

    step: int = 0  # optimizer steps done
    nonfinite_streak: int = 0
    nonfinite_total: int = 0


def run(cfg) -> RunResult:
    check_paths(cfg)
    teachers_cfg = resolve_teachers(cfg)
    accelerator = build_accelerator(cfg.train)
    device, is_main, rank = accelerator.device, accelerator.is_main_process, accelerator.process_index
    results_dir, train = cfg.results_dir, cfg.train
    if is_main:
        write_resolved_config(cfg, teachers_cfg, results_dir)
    if accelerator.num_processes != train.num_gpus * train.num_nodes:
        accelerator.print(
            f"note: running {accelerator.num_processes} process(es) as launched; train.num_gpus x train.num_nodes "
            f"says {train.num_gpus * train.num_nodes} (the launcher decides)."
        )

    parts = build_components(cfg, teachers_cfg, device=device, rank=rank, world_size=accelerator.num_processes)
    loader, loss_state = parts.loader, parts.loss_state
    accum = train.grad_accumulation_steps
    steps_per_epoch = max(1, loader.steps_per_epoch // accum)
    total_steps = train.num_epochs * steps_per_epoch
    if train.max_steps:
        total_steps = min(total_steps, train.max_steps)
    if train.compile:
        # In place (nn.Module.compile), so state_dict keys and checkpoints stay the same as eager.
        parts.model.compile()
    optimizer = build_optimizer(parts.model, train.optim)
    scheduler = build_scheduler(optimizer, train.optim, total_steps, steps_per_epoch)
    model, optimizer = accelerator.prepare(parts.model, optimizer)
    trainable = accelerator.unwrap_model(model)
    objective = DistillationObjective(
        teachers_cfg,
        parts.teachers,
        parts.criteria,
        SpatialTargets(parts.normalizers, trainable.spatial_heads),
        parts.plan,
    )

    counters = Counters()
    resume_path = ckpt.find_resume_checkpoint(results_dir, train.resume_training_checkpoint_path)
    if resume_path:
        payload = ckpt.load_checkpoint(resume_path, rank)
        for module, state, name in (
            (trainable, payload.model_state, ckpt.MODEL_FILE),
            (loss_state, payload.normalizer_state, ckpt.NORMALIZERS_FILE),
        ):
            load_exact(module, state, os.path.join(resume_path, name), "radio checkpoint", _OTHER_RUN)
        optimizer.load_state_dict(payload.optimizer_state)
        scheduler.load_state_dict(payload.trainer_state["scheduler"])
        loader.load_state_dict(payload.loader_state)
        counters = Counters(**payload.trainer_state["counters"])
        ckpt.set_rng_state(payload.rng)
        accelerator.print(f"resumed from {resume_path} at step {counters.step}")

    def save() -> str:
        for norm in parts.normalizers.values():
            norm.sync_statistics()  # a collective: merge every rank's pending statistics first
        payload = ckpt.CheckpointPayload(
            model_state=accelerator.get_state_dict(model),
            normalizer_state=loss_state.state_dict(),
            optimizer_state=optimizer.state_dict(),
            trainer_state={"counters": vars(counters), "scheduler": scheduler.state_dict()},
            loader_state=loader.state_dict(),
        )
        return ckpt.save_checkpoint(
            results_dir,
            counters.step,
            payload,
            rank=rank,
            is_main=is_main,
            barrier=accelerator.wait_for_everyone,
            keep=train.keep_checkpoints,
        )

    run_config = OmegaConf.to_container(cfg, resolve=True)
    logger = MetricsLogger(results_dir, cfg.logging, enabled=is_main, run_config=run_config, resume_step=counters.step)
    progress = _progress_bar(cfg, is_main, total_steps, counters.step)
    stop = StopRequest()
    window = MetricsWindow(loader.source_names, device, peak_tflops(device))
    step_flops = StepFlops(
        VitShape(
            trainable.student.depth,
            trainable.student.embed_dim,
            trainable.student.patch_size,
            trainable.student.num_prefix_tokens,
        ),
        {t.name: _vit_shape(t.backbone_type) for t in teachers_cfg},
    )
    data = iter(loader)
    max_grad_norm = train.clip_grad_norm or math.inf  # inf: measure the norm for logging, clip nothing
    model.train()
    try:
        while counters.step < total_steps:
            finite = True
            for micro in range(accum):
                batch = next(data)
                images = batch.images.to(device, non_blocking=True)
                targets = objective.teacher_targets(images, batch.sizes)
                student_x = make_view(images, batch.sizes["student"], parts.plan.student.mean, parts.plan.student.std)
                vitdet_window = choose_window(cfg.distill.vitdet, counters.step * accum + micro, train.seed)
                # DDP skips the gradient all-reduce only if forward and backward both run under no_sync.
                with accelerator.no_sync(model) if micro < accum - 1 else nullcontext():
                    with accelerator.autocast():
                        preds = model(student_x, vitdet_window=vitdet_window)
                    result = objective(preds, targets, batch.labels.to(device))
                    # Every rank must agree to skip, or DDP would wait forever for the missing gradients.
                    ok = torch.isfinite(result.loss) & (len(result.skipped) < len(result.terms))
                    if reduce_sum(accelerator, ok.float()).item() < accelerator.num_processes:
                        finite = False
                        break
                    accelerator.backward(result.loss / accum)
                window.add(batch, result, step_flops.per_image(batch.sizes) * len(batch.keys))
            if finite:
                window.add_grad_norm(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
                optimizer.step()
                counters.nonfinite_streak = 0
            else:
                counters.nonfinite_streak += 1
                counters.nonfinite_total += 1
                if counters.nonfinite_streak >= train.max_consecutive_nonfinite:
                    raise RadioError(
                        f"the loss was non-finite for {counters.nonfinite_streak} steps in a row (last at step "
                        f"{counters.step}); stopping. Lower train.optim.lr, set train.clip_grad_norm, or use "
                        f"train.precision=fp32; the newest checkpoint is in {ckpt.checkpoints_root(results_dir)}."
                    )
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scheduler.step()
            counters.step += 1
            step = counters.step
            if progress is not None:
                progress.update(1)

            if step % train.log_every_n_steps == 0 or step == total_steps:
                values = window.flush(accelerator, batch.counters)
                values.update({"lr": lr, "nonfinite_skipped_total": counters.nonfinite_total})
                for group, modules in (("normalizer", parts.normalizers), ("criterion", parts.criteria)):
                    for name, module in modules.items():
                        values.update({f"{group}/{name}/{k}": v for k, v in module.log_values().items()})
                logger.log(step, values)
                if progress is not None:
                    progress.set_postfix(loss=f"{values['loss/total']:.4f}")

            if stop.agreed(accelerator):
                save()
                accelerator.print(f"stop requested: checkpoint written at step {step}, exiting")
                return RunResult(results_dir, step, resume_path, True, [t.name for t in teachers_cfg])
            if step < total_steps and _checkpoint_due(train, step, steps_per_epoch):
                save()
        save()
        if is_main:
            write_final_outputs(cfg, trainable, teachers_cfg, results_dir)
    finally:
        stop.restore()
        logger.close()
        if progress is not None:
            progress.close()
    accelerator.wait_for_everyone()
    return RunResult(results_dir, counters.step, resume_path, False, [t.name for t in teachers_cfg])


def _vit_shape(backbone_type: str) -> VitShape:
    info = get_model_info(backbone_type)
    return VitShape(info.depth, info.embed_dim, info.patch_size, info.num_prefix_tokens)


def _checkpoint_due(train, step: int, steps_per_epoch: int) -> bool:
    if train.checkpoint_interval_steps and step % train.checkpoint_interval_steps == 0:
        return True
    epochs_done, epoch_end = divmod(step, steps_per_epoch)
    return bool(train.checkpoint_interval) and epoch_end == 0 and epochs_done % train.checkpoint_interval == 0


_OTHER_RUN = (
    "The checkpoint was written by a run with other teachers, heads or student; resume with the spec that "
    "wrote it, or use a fresh results_dir (or train.resume_training_checkpoint_path of a matching run)."
)


def _progress_bar(cfg, is_main: bool, total: int, initial: int):
    if not (is_main and cfg.logging.progress_bar):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="distill", unit="step", dynamic_ncols=True)
