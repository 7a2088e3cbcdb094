"""Semantic checks of a ``task: detection`` spec, before anything heavy starts (the counterpart of
``radio/config/validate.py``; file checks are ``check_detection_paths``, so ``--print-config`` works on drafts)."""

import os

from radio.config.validate import check_choice, check_length, check_positive, check_probability, validate_train
from radio.detection.bindings import resolve_bindings
from radio.detection.losses import LOGITS_KD_KINDS
from radio.detection.matching import MATCHINGS
from radio.errors import SpecError
from radio.run.teachers import TEACHER_PRECISIONS

STRIDE = 32  # the coarsest level of every supported detector: input sides must divide by it


def validate_detection_config(cfg) -> None:
    """Raise ``SpecError`` on the first problem: ranges, sizes, choices and the bindings."""
    if not str(cfg.results_dir).strip():
        raise SpecError("results_dir is empty; give the output folder, e.g. results_dir=/out/det1.")
    _validate_detector(cfg.model, "model")
    check_positive("model.distillation_loss_coef", cfg.model.distillation_loss_coef, allow_zero=True)
    ds = cfg.dataset
    if not ds.train_data_sources:
        raise SpecError(
            "dataset.train_data_sources is empty: list COCO sources as [{image_dir: ..., json_file: ...}] "
            "(`radio coco-demo DIR` writes a synthetic one)."
        )
    check_positive("dataset.num_classes", ds.num_classes)
    check_positive("dataset.batch_size", ds.batch_size)
    check_positive("dataset.workers", ds.workers, allow_zero=True)
    aug = ds.augmentation
    for name in ("train_spatial_size", "eval_spatial_size"):
        check_size(f"dataset.augmentation.{name}", list(getattr(aug, name)))
    for i, size in enumerate(aug.multi_scales):
        check_size(f"dataset.augmentation.multi_scales[{i}]", size)
    check_probability("dataset.augmentation.hflip_probability", aug.hflip_probability)
    check_length("dataset.augmentation.norm_mean", aug.norm_mean, [3])
    check_length("dataset.augmentation.norm_std", aug.norm_std, [3])
    if min(aug.norm_std) <= 0:
        raise SpecError(f"dataset.augmentation.norm_std={list(aug.norm_std)} must be positive.")
    validate_train(cfg.train)
    check_positive("train.validation_interval", cfg.train.validation_interval, allow_zero=True, optional=True)
    check_positive("train.validation_interval_steps", cfg.train.validation_interval_steps, optional=True)
    check_positive("evaluate.max_detections", cfg.evaluate.max_detections)
    _validate_distill(cfg)


def check_size(where: str, size) -> None:
    """An input size: an int (square) or [height, width], each a positive multiple of the coarsest stride."""
    sides = [size] if isinstance(size, int) else list(size) if hasattr(size, "__len__") else None
    if not sides or len(sides) > 2 or not all(isinstance(s, int) and s > 0 and s % STRIDE == 0 for s in sides):
        raise SpecError(
            f"{where}={size!r} is not valid; give a side or [height, width], positive multiples of {STRIDE} "
            "(e.g. 640 or [640, 640])."
        )


def _validate_detector(detector, where: str) -> None:
    from radio.detection.models import DETECTOR_FAMILIES

    check_choice(f"{where}.family", detector.family, tuple(DETECTOR_FAMILIES))
    if not str(detector.backbone).strip():
        raise SpecError(f"{where}.backbone is empty; give a timm model name (e.g. resnet18).")
    if not detector.out_indices:
        raise SpecError(f"{where}.out_indices is empty; list the backbone stages the encoder reads (e.g. [2, 3, 4]).")
    for name in ("hidden_dim", "num_queries", "decoder_layers", "ffn_dim", "attention_heads"):
        check_positive(f"{where}.{name}", getattr(detector, name))
    check_positive(f"{where}.encoder_layers", detector.encoder_layers, allow_zero=True)
    check_positive(f"{where}.num_denoising", detector.num_denoising, allow_zero=True)
    if detector.family == "deformable_detr" and detector.decoder_layers < 2:
        raise SpecError(
            f"{where}.decoder_layers={detector.decoder_layers}: transformers' Deformable DETR with box refinement "
            "shares its box heads across decoder layers and needs at least 2."
        )
    if detector.hidden_dim % detector.attention_heads:
        raise SpecError(
            f"{where}.hidden_dim={detector.hidden_dim} is not a multiple of {where}.attention_heads="
            f"{detector.attention_heads}."
        )


def _validate_distill(cfg) -> None:
    distill = cfg.distill
    check_choice("distill.matching", distill.matching, MATCHINGS)
    check_choice("distill.logits_kd_kind", distill.logits_kd_kind, LOGITS_KD_KINDS)
    check_choice("distill.teacher_precision", distill.teacher_precision, TEACHER_PRECISIONS, optional=True)
    check_positive("distill.temperature", distill.temperature)
    if distill.teacher is None:
        for field, value in (
            ("distill.bindings", bool(distill.bindings)),
            ("distill.pretrained_teacher_model_path", bool(distill.pretrained_teacher_model_path)),
            ("model.load_teacher_enc_dec", cfg.model.load_teacher_enc_dec),
        ):
            if value:
                raise SpecError(
                    f"{field} is set but distill.teacher is not: give the teacher's model section (family, "
                    "backbone, ...) as distill.teacher, or remove it for a run on the detection loss alone."
                )
        return
    _validate_detector(distill.teacher, "distill.teacher")
    if not distill.pretrained_teacher_model_path:
        raise SpecError(
            "distill.pretrained_teacher_model_path is not set; give the teacher's saved transformers folder "
            "(config.json + model.safetensors) or a .safetensors state dict (weights are never downloaded)."
        )
    bindings = resolve_bindings(distill, student_family=cfg.model.family)
    queries = (cfg.model.num_queries, distill.teacher.num_queries)
    if distill.matching == "index" and any(b.is_output for b in bindings) and queries[0] != queries[1]:
        raise SpecError(
            f"distill.matching=index pairs query i of the student with query i of the teacher, but model.num_queries="
            f"{queries[0]} and distill.teacher.num_queries={queries[1]}; use matching: hungarian (or gt), or equal "
            "query counts."
        )


def check_detection_paths(cfg) -> None:
    """Files the run needs must exist before any model is built or data is read."""
    if os.path.exists(cfg.results_dir) and not os.path.isdir(cfg.results_dir):
        raise SpecError(f"results_dir={cfg.results_dir!r} is a file; give a folder (it is created if missing).")
    sections = (
        ("train_data_sources", cfg.dataset.train_data_sources),
        ("val_data_sources", cfg.dataset.val_data_sources),
    )
    for section, sources in sections:
        for i, source in enumerate(sources):
            where = f"dataset.{section}[{i}]"
            if not os.path.isfile(source.json_file):
                raise SpecError(f"{where}.json_file={source.json_file!r} does not exist; give a COCO annotation file.")
            if not os.path.isdir(source.image_dir):
                raise SpecError(f"{where}.image_dir={source.image_dir!r} is not a folder; give the images' folder.")
    for where, path in (
        ("distill.pretrained_teacher_model_path", cfg.distill.pretrained_teacher_model_path),
        ("model.pretrained_backbone_path", cfg.model.pretrained_backbone_path),
    ):
        if path and not os.path.exists(path):
            raise SpecError(f"{where}={path!r} does not exist; point it at a local file or folder.")
