"""The trained student: a registry C-RADIO ViT sized from the spec, optionally initialised from a file."""

from typing import Optional

import torch

from radio.errors import SpecError
from radio.models.checkpoint_io import load_into
from radio.models.cradio import RadioViT, StudentOutput
from radio.models.registry import create_model, get_model_info, list_models

__all__ = ["build_student", "StudentOutput", "RadioViT"]


def build_student(backbone_cfg, num_summary_slots: int, vitdet_cfg=None) -> RadioViT:
    """Build ``model.backbone`` (a ``BackboneConfig``) as a ``RadioViT``.

    ``num_cls_tokens`` defaults to max(registry default, ``num_summary_slots``) so every summary teacher
    has its own CLS slot; ``num_registers`` / ``cpe_max_size`` default to the registry's. A
    ``pretrained_backbone_path`` (C-RADIO release in any of its layouts, or our own export) is loaded
    strictly, with the CLS rows and position grid adapted to this student's counts. ``vitdet_cfg``
    (``VitDetConfig``) picks the blocks that go windowed when ``forward`` gets ``vitdet_window``.
    """
    info = get_model_info(backbone_cfg.type)
    if not info.is_student:
        students = ", ".join(n for n in list_models() if get_model_info(n).is_student)
        raise SpecError(f"model.backbone.type: {backbone_cfg.type!r} cannot be the student; valid: {students}")
    with torch.device("meta"):
        reference = create_model(backbone_cfg.type)  # the registry defaults, without allocating weights
    num_cls = backbone_cfg.num_cls_tokens or max(reference.num_cls_tokens, num_summary_slots)
    if num_cls < num_summary_slots:
        raise SpecError(
            f"model.backbone.num_cls_tokens: {num_cls} is fewer than the {num_summary_slots} summary teachers; "
            f"use at least {num_summary_slots} (or leave it unset)"
        )
    overrides = dict(
        num_cls_tokens=num_cls,
        num_registers=backbone_cfg.num_registers,
        cpe_max_size=backbone_cfg.cpe_max_size,
        summary_idxs=tuple(i for i in reference.summary_idxs if i < num_cls),
    )
    path: Optional[str] = backbone_cfg.pretrained_backbone_path
    model = create_model(backbone_cfg.type, drop_path_rate=backbone_cfg.drop_path_rate, **overrides)
    if path:
        # A checkpoint of this type has the registry's CLS/register split.
        load_into(
            model, path, strict=True, role="student", source_split=(reference.num_cls_tokens, reference.num_registers)
        )
    if vitdet_cfg is not None:
        model.set_vitdet_layout(vitdet_cfg.num_global, vitdet_cfg.num_windowed)
    return model
