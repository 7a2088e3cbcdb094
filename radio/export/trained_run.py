"""Reload what a training run left in ``results_dir``: its config, teachers and trained module.

The trained module (student + heads) and the spatial-target normalisers are rebuilt by the run builder
(``radio/run/build.py``) from the run's ``config.yaml`` and filled strictly from a checkpoint folder
(``model.safetensors`` and ``normalizers.safetensors``, read with the one checkpoint reader). Teacher
weights are not needed: head widths come from the checkpoint's tensors, so exporting works on a machine
without the teachers.

``load_initial_run`` rebuilds the same module as the run initialised it before its first step (for comparing
a trained run with its untrained starting point).
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from radio.config.schema import RunConfig
from radio.models.adapted_student import AdaptedStudent
from radio.models.checkpoint_io import load_exact, read_state_dict
from radio.run.build import (
    HeadDims,
    build_normalizers,
    build_teachers,
    build_trained_module,
    head_dims_in,
    teacher_dims,
)
from radio.run.layout import (
    MODEL_FILE,
    NORMALIZERS_FILE,
    find_checkpoint_dir,
    list_complete_checkpoints,
    load_results_config,
)
from radio.run.teachers import ResolvedTeacher


@dataclass
class TrainedRun:
    """A trained run, rebuilt on the CPU in eval mode.

    ``model``: the ``AdaptedStudent`` (student backbone + per-teacher heads) with the checkpoint's weights.
    ``normalizers``: per spatial teacher, the normaliser whose ``inverse`` maps head outputs to teacher space.
    ``checkpoint_dir``: where the weights came from; None for the module as initialised (``load_initial_run``).
    """

    results_dir: str
    checkpoint_dir: Optional[str]
    cfg: RunConfig
    teachers: List[ResolvedTeacher]
    model: AdaptedStudent
    normalizers: Dict[str, nn.Module]


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
    dims = head_dims_in(state, teachers, model_path)
    model = build_trained_module(cfg, teachers, dims, pretrained=False)
    load_exact(model, state, model_path, "radio trained module", _NOT_THIS_RUN)
    model.eval()

    norm_path = os.path.join(folder, NORMALIZERS_FILE)
    normalizers = build_normalizers(cfg, teachers, dims)
    # No spatial teacher (label-only, logits teachers): the file holds no tensors, and nothing reads it.
    norm_state = read_state_dict(norm_path) if normalizers else {}
    for name, norm in normalizers.items():
        t = next(t for t in teachers if t.name == name)
        prefix = f"normalizers.{name}."
        load_exact(
            norm,
            {k[len(prefix) :]: v for k, v in norm_state.items() if k.startswith(prefix)},
            norm_path,
            f"{t.feature_normalizer} normaliser of {name}",
            _NOT_THIS_RUN,
        )
    return TrainedRun(results_dir, folder, cfg, teachers, model, {name: n.eval() for name, n in normalizers.items()})


def _initial_head_dims(cfg: RunConfig, teachers: List[ResolvedTeacher], results_dir: str) -> HeadDims:
    """Head widths: from the run's newest checkpoint when it has one (no teacher weights needed), else from
    the teachers, built as the run built them."""
    complete = list_complete_checkpoints(results_dir)
    if complete:
        path = os.path.join(complete[-1], MODEL_FILE)
        return head_dims_in(read_state_dict(path), teachers, path)
    cpu = torch.device("cpu")
    built = build_teachers(teachers, num_classes=cfg.dataset.num_classes, device=cpu, dtype=torch.float32)
    return teacher_dims(built)


def load_initial_run(results_dir: str) -> TrainedRun:
    """The trained module of ``results_dir`` as the run built it before step 0: seeded with ``train.seed`` and
    built (``model.backbone.pretrained_backbone_path`` included) as ``radio/run/build.build_components`` does;
    fresh normalisers. The global RNG is left as it was."""
    cfg, teachers = load_results_config(results_dir)
    dims = _initial_head_dims(cfg, teachers, results_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # build_components: the seed, then the trained module's draws
        model = build_trained_module(cfg, teachers, dims)
    normalizers = build_normalizers(cfg, teachers, dims)
    return TrainedRun(
        results_dir, None, cfg, teachers, model.eval(), {name: n.eval() for name, n in normalizers.items()}
    )
