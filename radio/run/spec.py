"""The spec a run starts from: parsed and range-checked by ``radio.config``, then checked against what the
components implement and resolved per teacher.

Each enumeration is declared once, by the module that implements it; this is where the spec is held to
them, so a value no component can run is refused before anything is built.
"""

import glob
import os
from typing import Optional, Sequence

from radio.config.load import BACKBONE_TASKS, load_config
from radio.config.schema import RunConfig
from radio.config.validate import check_choice
from radio.data.dedup import DEDUP_COUNTS_FILE, WEIGHT_MODES
from radio.detection.schema import DetectionRunConfig
from radio.detection.validate import validate_detection_config
from radio.engine.accel import PRECISIONS
from radio.engine.metrics import WANDB_MODES
from radio.engine.optim import LR_POLICIES, OPTIMIZERS
from radio.errors import CheckpointError, SpecError
from radio.models.heads import HEAD_VERSIONS
from radio.run.teachers import resolve_teachers

TASKS = {**BACKBONE_TASKS, "detection": (DetectionRunConfig, validate_detection_config)}  # ``task`` in a spec


def load_run_config(spec_path: Optional[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Spec file + ``key=value`` overrides -> the checked ``RunConfig`` (a ``DetectionRunConfig`` for
    ``task: detection``); ``SpecError`` on the first problem."""
    cfg = load_config(spec_path, overrides, TASKS)
    check_engine_choices(cfg)
    if cfg.task == "detection":
        return cfg
    check_implemented_choices(cfg)
    resolve_teachers(cfg)  # refuses impossible mode / loss / teacher combinations
    return cfg


def check_engine_choices(cfg) -> None:
    """The sections every task shares: precision, optimizer, schedule, logging."""
    check_choice("train.precision", cfg.train.precision, tuple(PRECISIONS))
    check_choice("train.optim.optim", cfg.train.optim.optim, tuple(OPTIMIZERS))
    check_choice("train.optim.policy", cfg.train.optim.policy, tuple(LR_POLICIES))
    check_choice("logging.wandb.mode", cfg.logging.wandb.mode, WANDB_MODES)


def check_implemented_choices(cfg) -> None:
    check_choice("dataset.train_dataset.data_weight_mode", cfg.dataset.train_dataset.data_weight_mode, WEIGHT_MODES)
    check_choice("distill.spatial_mlp_version", cfg.distill.spatial_mlp_version, HEAD_VERSIONS)
    for i, teacher in enumerate(cfg.distill.teacher):
        check_choice(
            f"distill.teacher[{i}].spatial_mlp_version", teacher.spatial_mlp_version, HEAD_VERSIONS, optional=True
        )


def _check_featsharp_files(cfg) -> None:
    """Each FeatSharp file reads, names a supported upsampler and fits its teacher (no model is built)."""
    from radio.run.build import featsharp_input_factor

    for t in resolve_teachers(cfg):
        if t.adaptor:
            try:
                featsharp_input_factor(t)
            except CheckpointError as exc:
                raise SpecError(f"distill.teacher[{t.index}].upsampler_checkpoint: {exc}") from None


def check_paths(cfg) -> None:
    """Files the run needs must exist before any model is built or data is read."""
    if cfg.task == "detection":
        from radio.detection.validate import check_detection_paths

        return check_detection_paths(cfg)
    if os.path.exists(cfg.results_dir) and not os.path.isdir(cfg.results_dir):
        raise SpecError(f"results_dir={cfg.results_dir!r} is a file; give a folder (it is created if missing).")
    for i, src in enumerate(cfg.dataset.train_dataset.tar_data_sources):
        where = f"dataset.train_dataset.tar_data_sources[{i}].root_dir"
        if not os.path.isdir(src.root_dir):
            raise SpecError(f"{where}={src.root_dir!r} is not a folder; point it at a folder holding *.tar shards.")
        if not glob.glob(os.path.join(glob.escape(src.root_dir), "**", "*.tar"), recursive=True):
            raise SpecError(
                f"{where}={src.root_dir!r} holds no *.tar shards (searched {src.root_dir}/**/*.tar); "
                "write shards with `radio shards write` or point root_dir at another folder."
            )
    images_dir = cfg.dataset.train_dataset.images_dir
    if images_dir and not os.path.isdir(images_dir):
        raise SpecError(f"dataset.train_dataset.images_dir={images_dir!r} is not a folder.")
    student_init = cfg.model.backbone.pretrained_backbone_path
    if student_init:
        if not os.path.isfile(student_init):
            raise SpecError(f"model.backbone.pretrained_backbone_path={student_init!r} does not exist.")
        _check_readable("model.backbone.pretrained_backbone_path", student_init)
    for i, teacher in enumerate(cfg.distill.teacher):
        path = teacher.pretrained_teacher_model_path
        where = f"distill.teacher[{i}].pretrained_teacher_model_path"
        if not path:
            raise SpecError(
                f"{where} is not set; give a local .safetensors/.pth/.pt checkpoint for "
                f"{teacher.model.backbone.type} (weights are never downloaded at run time)."
            )
        if os.path.isdir(path):
            raise SpecError(
                f"{where}={path!r} is a folder; give the checkpoint file inside it (e.g. {path}/model.safetensors)."
            )
        if not os.path.isfile(path):
            raise SpecError(
                f"{where}={path!r} does not exist; download the weights ahead of time, convert them with "
                "tools/convert_teacher.py if needed, and point this at the local file."
            )
        _check_readable(where, path)
        upsampler = teacher.upsampler_checkpoint
        if upsampler:
            where = f"distill.teacher[{i}].upsampler_checkpoint"
            if not os.path.isfile(upsampler):
                raise SpecError(
                    f"{where}={upsampler!r} does not exist; point it at a local FeatSharp checkpoint (docs/featsharp.md)."
                )
            _check_readable(where, upsampler)
    _check_featsharp_files(cfg)
    if str(cfg.dataset.train_dataset.data_weight_mode).lower() != "none":
        for i, src in enumerate(cfg.dataset.train_dataset.tar_data_sources):
            if not os.path.isfile(os.path.join(src.root_dir, DEDUP_COUNTS_FILE)):
                raise SpecError(
                    f"dataset.train_dataset.data_weight_mode={cfg.dataset.train_dataset.data_weight_mode} needs "
                    f"de-duplication counts, but {os.path.join(src.root_dir, DEDUP_COUNTS_FILE)} (source {i}) does "
                    f"not exist: run `radio shards stats {src.root_dir}` (list every root that can share images), "
                    "or set data_weight_mode=none."
                )


def _check_readable(where: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise SpecError(f"{where}={path!r} cannot be read ({exc.strerror or exc}); give a readable file.") from None
