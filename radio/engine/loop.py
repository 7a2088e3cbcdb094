"""The training loop: build everything from the resolved config, then one visible loop over steps."""
import os
import time
from contextlib import nullcontext
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from radio.config.resolve import resolve_teachers
from radio.config.validate import check_paths
from radio.data.loader import TrainLoader
from radio.data.views import build_view_plan, make_view
from radio.engine import checkpoint as ckpt
from radio.engine.accel import build_accelerator, reduce_sum, sum_counters
from radio.engine.metrics import MetricsLogger
from radio.engine.optim import build_optimizer, build_scheduler
from radio.engine.outputs import write_final_outputs, write_resolved_config
from radio.engine.stop import StopRequest
from radio.engine.targets import SpatialTargets
from radio.errors import RadioError
from radio.losses.aggregate import aggregate_teacher_losses, classification_loss
from radio.losses.criterion import TeacherCriterion
from radio.losses.normalizers import build_feature_normalizer
from radio.models.adapted_student import AdaptedStudent
from radio.models.student import build_student
from radio.models.teacher import FrozenTeacher
from radio.models.vitdet import choose_window


@dataclass
class RunResult:
    results_dir: str
    steps: int
    resumed_from: Optional[str] = None
    stopped_early: bool = False
    teacher_names: List[str] = field(default_factory=list)


def run(cfg) -> RunResult:
    check_paths(cfg)
    teachers_cfg = resolve_teachers(cfg)
    accelerator = build_accelerator(cfg.train)
    device, is_main = accelerator.device, accelerator.is_main_process
    results_dir = cfg.results_dir
    if is_main:
        write_resolved_config(cfg, teachers_cfg, results_dir)

    # Identical initial weights on every rank, whatever the data order.
    torch.manual_seed(cfg.train.seed)
    num_slots = max([t.summary_token_idx + 1 for t in teachers_cfg if t.summary_token_idx is not None], default=1)
    student = build_student(cfg.model.backbone, num_summary_slots=num_slots, vitdet_cfg=cfg.distill.vitdet)
    teachers = {
        t.name: FrozenTeacher(
            t.backbone_type,
            t.checkpoint_path,
            input_size=t.input_size,
            strict=t.strict_loading,
            num_classes=cfg.dataset.num_classes if t.mode == "logits" else 0,
            device=device,
        )
        for t in teachers_cfg
    }
    dims = {name: {"summary": t.summary_dim, "spatial": t.embed_dim} for name, t in teachers.items()}
    model = AdaptedStudent(student, teachers_cfg, dims, num_classes=cfg.dataset.num_classes)
    phi_s = cfg.distill.phi_s
    normalizers = nn.ModuleDict(
        {
            t.name: build_feature_normalizer(
                t.feature_normalizer,
                teachers[t.name].embed_dim,
                # The normaliser counts update() calls, one per micro-batch; the spec counts optimizer steps.
                refresh_every_n_steps=phi_s.refresh_every_n_steps * cfg.train.grad_accumulation_steps,
                freeze_after_steps=(
                    phi_s.freeze_after_steps * cfg.train.grad_accumulation_steps if phi_s.freeze_after_steps else None
                ),
            )
            for t in teachers_cfg
            if t.uses_spatial
        }
    ).to(device)
    criteria = nn.ModuleDict(
        {
            t.name: TeacherCriterion(
                t.mode,
                t.loss_type,
                summary_loss_type=t.summary_loss_type,
                summary_loss_weight=t.summary_loss_weight,
                fd_loss_weight=t.fd_loss_weight,
                temperature=t.temperature,
            )
            for t in teachers_cfg
        }
    ).to(device)
    lambdas = {t.name: t.loss_lambda for t in teachers_cfg}
    mean_lambda = sum(lambdas.values()) / len(lambdas)
    # Non-trained state that must survive a resume: normaliser statistics and the losses' running state.
    loss_state = nn.ModuleDict({"normalizers": normalizers, "criteria": criteria})

    plan = build_view_plan(cfg, teachers_cfg, student.patch_size)
    loader = TrainLoader(
        cfg.dataset, plan, seed=cfg.train.seed, rank=accelerator.process_index, world_size=accelerator.num_processes
    )
    accum = cfg.train.grad_accumulation_steps
    steps_per_epoch = max(1, loader.steps_per_epoch // accum)
    total_steps = cfg.train.num_epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)

    optimizer = build_optimizer(model, cfg.train.optim)
    scheduler = build_scheduler(optimizer, cfg.train.optim, total_steps, steps_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = accelerator.unwrap_model(model)
    spatial_targets = SpatialTargets(normalizers, trainable.spatial_heads)

    step, nonfinite_streak, nonfinite_total = 0, 0, 0
    resume_path = ckpt.find_resume_checkpoint(results_dir, cfg.train.resume_training_checkpoint_path)
    if resume_path:
        payload = ckpt.load_checkpoint(resume_path, accelerator.process_index)
        _load_strict(trainable, payload.model_state, resume_path, "model.safetensors")
        _load_strict(loss_state, payload.normalizer_state, resume_path, "normalizers.safetensors")
        optimizer.load_state_dict(payload.optimizer_state)
        scheduler.load_state_dict(payload.trainer_state["scheduler"])
        loader.load_state_dict(payload.loader_state)
        step = payload.trainer_state["step"]
        nonfinite_streak = payload.trainer_state["nonfinite_streak"]
        nonfinite_total = payload.trainer_state["nonfinite_total"]
        ckpt.set_rng_state(payload.rng)
        accelerator.print(f"resumed from {resume_path} at step {step}")

    def save(at_step: int) -> str:
        for norm in normalizers.values():
            norm.sync_statistics()  # a collective: merge every rank's pending statistics first
        payload = ckpt.CheckpointPayload(
            model_state=accelerator.get_state_dict(model),
            normalizer_state=loss_state.state_dict(),
            optimizer_state=optimizer.state_dict(),
            trainer_state={
                "step": at_step,
                "nonfinite_streak": nonfinite_streak,
                "nonfinite_total": nonfinite_total,
                "scheduler": scheduler.state_dict(),
            },
            loader_state=loader.state_dict(),
        )
        return ckpt.save_checkpoint(
            results_dir, at_step, payload, rank=accelerator.process_index, is_main=is_main,
            barrier=accelerator.wait_for_everyone, keep=cfg.train.keep_checkpoints,
        )

    logger = MetricsLogger(
        results_dir, cfg.logging, enabled=is_main, run_config=OmegaConf.to_container(cfg, resolve=True)
    )
    progress = _progress_bar(cfg, is_main, total_steps, step)
    stop = StopRequest()
    source_names = loader.source_names
    window = _Window(len(source_names))
    data = iter(loader)
    clip = cfg.train.clip_grad_norm
    log_every = cfg.train.log_every_n_steps
    every_steps = cfg.train.checkpoint_interval_steps
    every_epochs = cfg.train.checkpoint_interval
    model.train()
    try:
        while step < total_steps:
            finite_step = True
            for micro in range(accum):
                batch = next(data)
                micro_step = step * accum + micro
                images = batch.images.to(device, non_blocking=True)
                targets = _teacher_targets(images, batch.sizes, teachers_cfg, teachers, spatial_targets)
                student_x = make_view(images, batch.sizes["student"], plan.student.mean, plan.student.std)
                vitdet_window = choose_window(cfg.distill.vitdet, micro_step, cfg.train.seed)
                with accelerator.autocast():
                    preds = model(student_x, vitdet_window=vitdet_window)
                terms = {t.name: criteria[t.name](preds[t.name], targets[t.name]) for t in teachers_cfg}
                loss, skipped = aggregate_teacher_losses({n: v["total"] for n, v in terms.items()}, lambdas)
                extra: Dict[str, torch.Tensor] = {}
                if "_logits" in preds:
                    # (1 − λ̄)·CE(labels) + Σ λ_i/N · L_i: for one teacher exactly (1 − λ)·CE + λ·L_distill.
                    # Labels of -1 (unlabelled samples) are left out of the CE mean.
                    label_ce = classification_loss(
                        preds["_logits"]["logits"], batch.labels.to(device), torch.zeros((), device=device), 0.0
                    )
                    loss = loss + (1.0 - mean_lambda) * label_ce
                    extra["loss/label_ce"] = label_ce
                # Every rank must agree to skip, or DDP would wait forever for the missing gradients.
                finite = reduce_sum(
                    accelerator, torch.tensor(float(torch.isfinite(loss) and len(skipped) < len(terms)), device=device)
                )
                if finite.item() < accelerator.num_processes:
                    finite_step = False
                    break
                with accelerator.no_sync(model) if micro < accum - 1 else nullcontext():
                    accelerator.backward(loss / accum)
                window.add(batch, terms, loss, skipped, extra)
            if finite_step:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), clip) if clip else None
                optimizer.step()
                nonfinite_streak = 0
                window.grad_norm(grad_norm)
            else:
                nonfinite_streak += 1
                nonfinite_total += 1
                if nonfinite_streak >= cfg.train.max_consecutive_nonfinite:
                    raise RadioError(
                        f"the loss was non-finite for {nonfinite_streak} steps in a row (last at step {step}); "
                        "stopping. Lower train.optim.lr, set train.clip_grad_norm, or use train.precision=fp32; "
                        f"the newest checkpoint is in {ckpt.checkpoints_root(results_dir)}."
                    )
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if progress is not None:
                progress.update(1)

            if step % log_every == 0 or step == total_steps:
                values = window.flush(accelerator, source_names, batch.counters)
                values.update({"lr": scheduler.get_last_lr()[0], "nonfinite_skipped_total": nonfinite_total})
                for group, modules in (("normalizer", normalizers), ("criterion", criteria)):
                    for name, module in modules.items():
                        for key, value in module.log_values().items():
                            values[f"{group}/{name}/{key}"] = value
                logger.log(step, values)
                if progress is not None:
                    progress.set_postfix(loss=f"{values.get('loss/total', float('nan')):.4f}")

            epoch_end = step % steps_per_epoch == 0
            due = (every_steps and step % every_steps == 0) or (
                every_epochs and epoch_end and (step // steps_per_epoch) % every_epochs == 0
            )
            if stop.agreed(accelerator):
                save(step)
                accelerator.print(f"stop requested: checkpoint written at step {step}, exiting")
                return RunResult(results_dir, step, resume_path, True, [t.name for t in teachers_cfg])
            if due and step < total_steps:
                save(step)
        save(step)
        if is_main:
            write_final_outputs(cfg, trainable, teachers_cfg, normalizers, results_dir)
    finally:
        stop.restore()
        logger.close()
        if progress is not None:
            progress.close()
    accelerator.wait_for_everyone()
    return RunResult(results_dir, step, resume_path, False, [t.name for t in teachers_cfg])


def _teacher_targets(images, sizes, teachers_cfg, teachers, spatial_targets) -> Dict[str, Dict[str, torch.Tensor]]:
    """Each teacher sees the shared crop at its own resolution and normalisation."""
    targets = {}
    for t in teachers_cfg:
        x = make_view(images, sizes[t.name], t.norm_mean, t.norm_std)
        out = teachers[t.name](x)
        target: Dict[str, torch.Tensor] = {}
        if t.uses_summary:
            target["summary"] = out.summary
        if t.uses_spatial:
            target["spatial"] = spatial_targets(t.name, out.spatial)
        if t.mode == "logits":
            target["logits"] = out.logits
        targets[t.name] = target
    return targets


def _load_strict(module: nn.Module, state: Dict[str, torch.Tensor], where: str, name: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RadioError(
            f"{os.path.join(where, name)} does not match this run's model ({len(missing)} missing keys, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). It was written by a run with "
            "other teachers or another student; use a fresh results_dir or the matching spec."
        )


def _progress_bar(cfg, is_main: bool, total: int, initial: int):
    if not (is_main and cfg.logging.progress_bar):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="distill", unit="step", dynamic_ncols=True)


class _Window:
    """Accumulates per-step values between two log lines; flushes global (all-rank) means."""

    def __init__(self, num_sources: int):
        self.num_sources = num_sources
        self.reset()

    def reset(self) -> None:
        self.sums: Dict[str, float] = defaultdict(float)
        self.micro_steps = 0
        self.images = 0
        self.sources = torch.zeros(self.num_sources, dtype=torch.float64)
        self.grad_norms: List[float] = []
        self.skipped_terms = 0
        self.started = time.perf_counter()

    def add(self, batch, terms, loss, skipped, extra) -> None:
        self.micro_steps += 1
        self.images += len(batch.keys)
        self.sums["loss/total"] += float(loss.detach())
        for tag, value in extra.items():
            self.sums[tag] += float(value.detach())
        for name, parts in terms.items():
            for key, value in parts.items():
                tag = f"loss/{name}" if key == "total" else f"loss/{name}/{key}"
                self.sums[tag] += float(value.detach())
        self.skipped_terms += len(skipped)
        self.sources += torch.bincount(batch.sources, minlength=self.num_sources).double()

    def grad_norm(self, value) -> None:
        if value is not None:
            self.grad_norms.append(float(value))

    def flush(self, accelerator, source_names: List[str], counters: Dict[str, int]) -> Dict[str, float]:
        elapsed = time.perf_counter() - self.started
        device = accelerator.device
        keys = sorted(self.sums)
        packed = torch.tensor(
            [self.sums[k] for k in keys] + [self.micro_steps, self.images, self.skipped_terms] + self.sources.tolist(),
            dtype=torch.float64,
            device=device,
        )
        packed = reduce_sum(accelerator, packed).cpu()
        n = max(packed[len(keys)].item(), 1.0)
        values = {k: packed[i].item() / n for i, k in enumerate(keys)}
        images = packed[len(keys) + 1].item()
        values["loss_terms_skipped"] = packed[len(keys) + 2].item()
        mix = packed[len(keys) + 3:]
        for name, count in zip(source_names, mix.tolist()):
            values[f"mixture/{name}"] = count / max(mix.sum().item(), 1.0)
        values["images_per_s"] = images / max(elapsed, 1e-9)
        if self.grad_norms:
            values["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        for key, value in sum_counters(accelerator, counters).items():
            values[f"data/{key}"] = value
        self.reset()
        return values
