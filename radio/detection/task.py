"""``task: detection`` in the engine's loop (``radio/engine/loop.py``): what it builds, logs between steps and
leaves behind. The loop, checkpoints, resume, stop protocol and metrics are the backbone task's own.

- Build: the student detector (seeded by ``train.seed``), the frozen teacher from
  ``distill.pretrained_teacher_model_path`` in ``distill.teacher_precision``, ``load_teacher_enc_dec``, the
  ``DetectionDistiller`` (student + projections) that Accelerate prepares, the COCO loader.
- Between steps: COCO mAP of the student on ``dataset.val_data_sources`` every ``train.validation_interval``
  epochs (or ``validation_interval_steps``), logged as ``val_mAP``, ``val_mAP50``, ... (every rank runs the
  forward passes, so ZeRO-3's sharded parameters gather; the main rank scores). It runs on a forked RNG, so a
  resumed run draws exactly what the uninterrupted one draws.
- Outputs: ``detector_final/``, the student as a transformers folder ``AutoModelForObjectDetection`` reloads,
  and the report (loss plot, ``report.html``).
"""

import contextlib
import copy
import os
from typing import Dict, List, Optional

import torch
from torch import nn

from radio.detection.bindings import resolve_bindings
from radio.detection.data import DetectionTrainLoader, coco_sources, detection_eval_batches
from radio.detection.models import (
    CopyReport,
    build_detector,
    copy_teacher_enc_dec,
    export_detector,
    freeze,
    load_detector,
)
from radio.detection.objective import DetectionDistiller, DetectionTeacher
from radio.detection.predictions import evaluate_detector
from radio.detection.step import DetectionStep
from radio.engine.accel import uses_deepspeed
from radio.engine.loop import RunResult, count_step, run_length
from radio.engine.metrics import MetricsWindow
from radio.engine.optim import build_optimizer, build_scheduler
from radio.engine.params import ReplicatedParams, ZeroParams
from radio.engine.report import write_report
from radio.engine.run_description import combined_tags, engine_name
from radio.engine.run_state import RunState
from radio.errors import SpecError
from radio.report.dashboards import RunDescription
from radio.run.build import teacher_dtype
from radio.run.layout import DETECTOR_FINAL_DIR, resolved_config, write_resolved_config, write_teachers_file

TEACHER_NAME = "teacher"  # the one detection teacher, in teachers.json and the dashboards' tags


def build_student(cfg) -> nn.Module:
    """The student detector as the run initialises it (``train.seed``, then ``model.pretrained_backbone_path``)."""
    torch.manual_seed(cfg.train.seed)
    return build_detector(cfg.model, cfg.dataset.num_classes, where="model")


def load_teacher(cfg) -> Optional[nn.Module]:
    """The frozen teacher as its file holds it (fp32, on CPU); None when the spec has none."""
    if cfg.distill.teacher is None:
        return None
    model = load_detector(
        cfg.distill.teacher,
        cfg.dataset.num_classes,
        cfg.distill.pretrained_teacher_model_path,
        where="distill.pretrained_teacher_model_path",
    )
    return freeze(model)


def start_from_teacher(cfg, student: nn.Module, teacher: Optional[nn.Module]) -> Optional[CopyReport]:
    """``model.load_teacher_enc_dec``: the teacher's tensors outside the backbone copied into ``student``, from
    ``teacher`` as ``load_teacher`` gives it (a copy from the bf16 teacher of a GPU run would round them);
    None when the spec asks for no copy."""
    if teacher is None or not cfg.model.load_teacher_enc_dec:
        return None
    return copy_teacher_enc_dec(student, teacher)


def build_distiller(cfg, student: nn.Module, bindings, teacher: Optional[DetectionTeacher]) -> DetectionDistiller:
    """The trained module of a run (training, ``radio eval``): ``student`` with the spec's objective."""
    distill = cfg.distill
    return DetectionDistiller(
        student,
        bindings,
        teacher=teacher,
        coef=cfg.model.distillation_loss_coef,
        matching=distill.matching,
        logits_kd_kind=distill.logits_kd_kind,
        temperature=distill.temperature,
        confidence_weighted=distill.confidence_weighted,
        probe_size=tuple(cfg.dataset.augmentation.train_spatial_size),
    )


def with_absolute_paths(cfg):
    """A copy of ``cfg`` whose files and folders are absolute: ``config.yaml`` is what ``radio eval`` and
    ``radio export`` rebuild the run from, from whatever folder they are started in."""
    absolute = copy.deepcopy(cfg)
    for source in [*absolute.dataset.train_data_sources, *absolute.dataset.val_data_sources]:
        source.image_dir, source.json_file = os.path.abspath(source.image_dir), os.path.abspath(source.json_file)
    sections = [(absolute.model, "pretrained_backbone_path"), (absolute.distill, "pretrained_teacher_model_path")]
    if absolute.distill.teacher is not None:
        sections.append((absolute.distill.teacher, "pretrained_backbone_path"))
    for section, field in sections:
        if section[field]:
            section[field] = os.path.abspath(section[field])
    return absolute


@contextlib.contextmanager
def whole_models(accelerator):
    """Models built inside are whole: with a DeepSpeed ZeRO-3 config registered, transformers' ``from_pretrained``
    would partition the teacher as it builds it, but teachers are replicated and the student is sharded by
    ``accelerator.prepare``, as in the backbone task (``radio/engine/accel.py``: ``zero3_init_flag=False``)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    registered = getattr(plugin, "dschf", None)
    if registered is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(registered)


class DetectionTask:
    def __init__(self, cfg):
        self.cfg = cfg
        self.bindings = resolve_bindings(cfg.distill, student_family=cfg.model.family) if cfg.distill.teacher else []
        self.trainer: Optional["DetectionTrainer"] = None

    def notes(self) -> List[str]:
        if self.cfg.distill.teacher is not None and not self.bindings and not self.cfg.model.load_teacher_enc_dec:
            return [
                "note: distill.teacher is set but distill.bindings is empty and model.load_teacher_enc_dec is false: "
                "the teacher is loaded but teaches nothing (add bindings, e.g. {teacher_module_name: srcs, "
                "criterion: IOU})."
            ]
        return []

    def build(self, accelerator, phases, stop) -> "DetectionTrainer":
        self.trainer = DetectionTrainer(self.cfg, self.bindings, accelerator, stop)
        return self.trainer

    def write_start_files(self) -> None:
        cfg = self.cfg
        write_resolved_config(with_absolute_paths(cfg), [], cfg.results_dir)
        teacher = self.trainer.teacher_model
        records = []
        if teacher is not None:
            records.append(
                {
                    "name": TEACHER_NAME,
                    "type": f"{cfg.distill.teacher.family}/{cfg.distill.teacher.backbone}",
                    "file": os.path.abspath(cfg.distill.pretrained_teacher_model_path),
                    "layout": "transformers detector (strict)",
                    "tensors": len(teacher.state_dict()),
                    "dtype": str(next(teacher.parameters()).dtype).removeprefix("torch."),
                    "copied_into_student": self.trainer.copied_tensors,
                }
            )
        write_teachers_file(cfg.results_dir, records)

    def describe(self, accelerator) -> RunDescription:
        cfg = self.cfg
        sources = self.trainer.loader.sources
        total = sum(s.num_images for s in sources)
        requested = {s.name: s.num_images / total for s in sources}
        config = resolved_config(cfg, [])
        config["mixture_requested"] = requested
        teacher = cfg.distill.teacher
        described = [
            "task:detection",
            f"student:{cfg.model.family}/{cfg.model.backbone}",
            f"teacher:{teacher.family}/{teacher.backbone}" if teacher is not None else "teacher:none",
        ]
        tags = combined_tags(cfg, described, engine_name(accelerator))
        return RunDescription(tags, config, requested)

    def write_final_outputs(self, trainer: "DetectionTrainer", trained_state: Dict[str, torch.Tensor]) -> None:
        with whole_models(trainer.accelerator):  # on the main rank alone: no partitioning collective
            student = build_student(self.cfg)  # a fresh fp32 copy on CPU: right whatever the engine held
        student_state = {k.removeprefix("student."): v for k, v in trained_state.items() if k.startswith("student.")}
        student.load_state_dict(student_state, strict=True)
        export_detector(student, os.path.join(self.cfg.results_dir, DETECTOR_FINAL_DIR))
        write_report(self.cfg.results_dir, trainer.loss_names)

    def result(self, results_dir: str, steps: int, resumed_from: Optional[str], stopped_early: bool):
        teachers = [TEACHER_NAME] if self.cfg.distill.teacher is not None else []
        return RunResult(results_dir, steps, resumed_from, stopped_early, teachers)


class DetectionTrainer:
    """The prepared pieces of one detection run, in the shape the loop drives (``radio/engine/loop.py``)."""

    loss_names = ["detection", "distillation"]

    def __init__(self, cfg, bindings, accelerator, stop):
        self.cfg, self.accelerator = cfg, accelerator
        train, ds, device = cfg.train, cfg.dataset, accelerator.device
        with whole_models(accelerator):
            student = build_student(cfg)
            self.teacher_model = load_teacher(cfg)
            report = start_from_teacher(cfg, student, self.teacher_model)
            if self.teacher_model is not None:
                self.teacher_model.to(device=device, dtype=teacher_dtype(cfg, device))
        self.copied_tensors = 0 if report is None else len(report.copied)
        if report is not None:
            accelerator.print(f"model.load_teacher_enc_dec: {report.describe()}")
        if uses_deepspeed(accelerator) and train.precision == "bf16":
            raise SpecError(
                "task: detection under DeepSpeed needs train.precision=fp32: DeepSpeed's bf16 casts the detector's "
                "weights, and transformers' RT-DETR denoising and Deformable DETR matcher then mix float32 and "
                "bfloat16. Use DDP (accelerate launch --multi_gpu) for bf16, or train.precision=fp32 under ZeRO."
            )
        teacher = None
        if self.teacher_model is not None and bindings:  # a teacher that only initialised the student never runs
            teacher = DetectionTeacher(
                self.teacher_model, bindings, dtype=teacher_dtype(cfg, device), matching=cfg.distill.matching
            )
        distiller = build_distiller(cfg, student.to(device), bindings, teacher)
        aug = ds.augmentation
        train_sources = coco_sources(ds.train_data_sources, num_classes=ds.num_classes, section="train_data_sources")
        self.val_sources = coco_sources(ds.val_data_sources, num_classes=ds.num_classes, section="val_data_sources")
        for source in train_sources + self.val_sources:
            for note in source.notes:
                accelerator.print(f"note: {source.name}: {note}")
        self.loader = DetectionTrainLoader(
            train_sources,
            batch_size=ds.batch_size,
            workers=ds.workers,
            spatial_size=tuple(aug.train_spatial_size),
            multi_scales=list(aug.multi_scales),
            hflip_probability=aug.hflip_probability,
            norm_mean=list(aug.norm_mean),
            norm_std=list(aug.norm_std),
            seed=train.seed,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        self.total_steps, self.steps_per_epoch = run_length(train, self.loader.steps_per_epoch, accelerator.print)
        optimizer = build_optimizer(distiller, train.optim)
        self.scheduler = build_scheduler(optimizer, train.optim, self.total_steps, self.steps_per_epoch)
        model, optimizer = accelerator.prepare(distiller, optimizer)
        self.model = model
        self.trainable = accelerator.unwrap_model(model)
        zero = uses_deepspeed(accelerator)
        self.params = (
            ZeroParams(model, accelerator.process_index) if zero else ReplicatedParams(self.trainable, optimizer)
        )
        self.window = MetricsWindow(self.loader.source_names, device)
        self.state = RunState(
            self.params,
            nn.Module(),  # no loss state: the detection objective keeps no running statistics
            self.scheduler,
            self.loader,
            self.window,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            total_steps=self.total_steps,
        )
        self.train_step = DetectionStep(
            accelerator,
            model,
            optimizer,
            teacher,
            accum=train.grad_accumulation_steps,
            clip_grad_norm=train.clip_grad_norm,
            input_dtype=torch.bfloat16 if zero and train.precision == "bf16" else torch.float32,
            stop_requested=lambda: stop.reason(cfg.results_dir) is not None,
        )
        model.train()

    def step(self, data):
        outcome = self.train_step(data, self.window)
        return outcome, count_step(self.state, self.scheduler, outcome, self.cfg.train, self.cfg.results_dir, list)

    def window_values(self, outcome, lr: float) -> dict:
        values = self.window.flush(self.accelerator, {})
        values.pop("tflops_per_s")  # no FLOP count for detectors: a 0 would read as a measurement
        values.update({"lr": lr, "nonfinite_skipped_total": self.state.counters.nonfinite_total})
        height, width = outcome.last_batch.pixel_values.shape[-2:]
        values.update({"size/height": height, "size/width": width})
        return values

    def on_device(self, batches):
        """The batches as they come: each step moves its own (from pinned memory on a GPU, without blocking)."""
        return batches

    def after_step(self, step: int, log) -> None:
        """The validation mAP when due, logged and said in one line."""
        if not self.val_sources or not self._validation_due(step):
            return
        metrics = self.validate()
        if self.accelerator.is_main_process:
            log(step, metrics)
            shown = ", ".join(f"{k.removeprefix('val_')} {v:.4f}" for k, v in metrics.items() if v is not None)
            print(f"validation at step {step}: {shown}", flush=True)

    def _validation_due(self, step: int) -> bool:
        """Every ``train.validation_interval`` epochs and ``validation_interval_steps`` steps, and at the last
        step (a run shorter than the interval is still scored) when either is set."""
        train = self.cfg.train
        if not (train.validation_interval or train.validation_interval_steps):
            return False
        if step == self.total_steps:
            return True
        if train.validation_interval_steps and step % train.validation_interval_steps == 0:
            return True
        epochs, within = divmod(step, self.steps_per_epoch)
        return bool(train.validation_interval) and within == 0 and epochs % train.validation_interval == 0

    def validate(self) -> Dict[str, float]:
        """``val_<metric>`` of the first val source, ``val/<name>/<metric>`` of every other one."""
        cfg, device = self.cfg, self.accelerator.device
        aug, student = cfg.dataset.augmentation, self.trainable.student
        dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        values = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for index, source in enumerate(self.val_sources):
                batches = detection_eval_batches(
                    source,
                    batch_size=cfg.dataset.batch_size,
                    workers=cfg.dataset.workers,
                    spatial_size=tuple(aug.eval_spatial_size),
                    norm_mean=list(aug.norm_mean),
                    norm_std=list(aug.norm_std),
                )
                metrics = evaluate_detector(
                    student,
                    batches,
                    source.json_file,
                    device=device,
                    dtype=dtype,
                    max_detections=cfg.evaluate.max_detections,
                )
                prefix = "val_" if index == 0 else f"val/{source.name}/"
                values.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return values
