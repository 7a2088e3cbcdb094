"""Reload what a training run left in ``results_dir``: its config, teachers and trained module.

The trained module (student + heads) and the spatial-target normalisers are rebuilt from the run's
resolved ``config.yaml`` and filled strictly from a checkpoint folder (``model.safetensors`` and
``normalizers.safetensors``, read with the one checkpoint reader). Teacher weights are not needed: head
widths come from the checkpoint's tensors, so exporting works on a machine without the teachers.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from radio.config.resolve import ResolvedTeacher
from radio.config.schema import RunConfig
from radio.engine.checkpoint import MODEL_FILE, NORMALIZERS_FILE, TRAINER_STATE, list_complete_checkpoints
from radio.errors import CheckpointError, RadioError
from radio.losses.normalizers import build_feature_normalizer
from radio.models.adapted_student import AdaptedStudent
from radio.models.checkpoint_io import load_exact, read_state_dict
from radio.models.student import build_student


@dataclass
class TrainedRun:
    """A trained run, rebuilt on the CPU in eval mode.

    ``model``: the ``AdaptedStudent`` (student backbone + per-teacher heads) with the checkpoint's weights.
    ``normalizers``: per spatial teacher, the normaliser whose ``inverse`` maps head outputs to teacher space.
    """

    results_dir: str
    checkpoint_dir: str
    cfg: RunConfig
    teachers: List[ResolvedTeacher]
    model: AdaptedStudent
    normalizers: Dict[str, nn.Module]


def load_results_config(results_dir: str):
    """``results_dir/config.yaml`` -> (RunConfig, resolved teachers as written by the run)."""
    if not os.path.isdir(results_dir):
        raise RadioError(f"results directory {results_dir!r} does not exist (pass the results_dir of a finished run).")
    path = os.path.join(results_dir, "config.yaml")
    if not os.path.isfile(path):
        raise RadioError(
            f"{path} not found: {results_dir!r} is not a radio results directory (a run writes config.yaml there "
            "when it starts)."
        )
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
        resolved = raw.pop("resolved_teachers")
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
    except (OmegaConfBaseException, KeyError, AttributeError, ValueError) as exc:
        raise RadioError(f"{path}: not a resolved radio run config ({type(exc).__name__}: {exc})") from None
    derived = ("uses_summary", "uses_spatial")  # recomputed from the mode
    teachers = [ResolvedTeacher(**{k: v for k, v in t.items() if k not in derived}) for t in resolved]
    return cfg, teachers


def find_checkpoint_dir(results_dir: str, checkpoint: Optional[str]) -> str:
    """``checkpoint`` (a ``step_*`` folder or its ``model.safetensors``) or else the run's newest complete one."""
    if checkpoint:
        folder = os.path.dirname(checkpoint) if os.path.isfile(checkpoint) else checkpoint
        if not os.path.isfile(os.path.join(folder, MODEL_FILE)):
            raise CheckpointError(
                f"--checkpoint {checkpoint!r}: no {MODEL_FILE} there; pass a checkpoint folder "
                f"({results_dir}/checkpoints/step_*) or the {MODEL_FILE} inside one."
            )
        return folder
    complete = list_complete_checkpoints(results_dir)
    if not complete:
        raise CheckpointError(
            f"{results_dir}: no complete checkpoint under {results_dir}/checkpoints (a step_* folder holding "
            f"{TRAINER_STATE}); train first or pass --checkpoint."
        )
    return complete[-1]


def _head_out_dim(state: Dict[str, torch.Tensor], prefix: str) -> Optional[int]:
    """Output width of the head stored under ``prefix`` (v2 MLP ``final.2``, attn ``mlp.final.2``, or a Linear)."""
    for key in (f"{prefix}final.2.weight", f"{prefix}mlp.final.2.weight", f"{prefix}weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


_NOT_THIS_RUN = (
    "This checkpoint was not written by the run in this results directory (different student, teachers or "
    "heads); pass a checkpoint of this run."
)


def load_trained_run(results_dir: str, checkpoint: Optional[str] = None) -> TrainedRun:
    """Rebuild the trained module of ``results_dir`` from ``checkpoint`` (default: the newest one)."""
    cfg, teachers = load_results_config(results_dir)
    folder = find_checkpoint_dir(results_dir, checkpoint)
    model_path = os.path.join(folder, MODEL_FILE)
    state = read_state_dict(model_path)

    backbone = OmegaConf.merge(
        cfg.model.backbone, {"pretrained_backbone_path": None}
    )  # weights come from the checkpoint
    slots = [t.summary_token_idx + 1 for t in teachers if t.summary_token_idx is not None]
    student = build_student(backbone, num_summary_slots=max(slots, default=1))
    dims: Dict[str, Dict[str, int]] = {}
    for t in teachers:
        summary = _head_out_dim(state, f"summary_heads.{t.name}.")
        spatial = _head_out_dim(state, f"spatial_heads.{t.name}.")
        if (t.uses_summary and summary is None) or (t.uses_spatial and spatial is None):
            raise CheckpointError(
                f"{model_path}: no head for teacher {t.name!r} (mode {t.mode}); this checkpoint is not from the run "
                f"in {results_dir}."
            )
        dims[t.name] = {"summary": summary or 0, "spatial": spatial or 0}
    model = AdaptedStudent(student, teachers, dims, num_classes=cfg.dataset.num_classes)
    load_exact(model, state, model_path, "radio trained module", _NOT_THIS_RUN)
    model.eval()

    norm_path = os.path.join(folder, NORMALIZERS_FILE)
    norm_state = read_state_dict(norm_path)
    phi_s = cfg.distill.phi_s
    normalizers = {}
    for t in teachers:
        if not t.uses_spatial:
            continue
        norm = build_feature_normalizer(
            t.feature_normalizer, dims[t.name]["spatial"], refresh_every_n_steps=phi_s.refresh_every_n_steps
        )
        prefix = f"normalizers.{t.name}."
        load_exact(
            norm,
            {k[len(prefix) :]: v for k, v in norm_state.items() if k.startswith(prefix)},
            norm_path,
            f"{t.feature_normalizer} normaliser of {t.name}",
            _NOT_THIS_RUN,
        )
        normalizers[t.name] = norm.eval()
    return TrainedRun(results_dir, folder, cfg, teachers, model, normalizers)
