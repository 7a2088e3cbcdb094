"""Reload what a training run left in ``results_dir``: its config, teachers and trained module.

The trained module (student + heads) and the spatial-target normalisers are rebuilt by the run builder
(``radio/run/build.py``) from the run's ``config.yaml`` and filled strictly from a checkpoint folder
(``model.safetensors`` and ``normalizers.safetensors``, read with the one checkpoint reader). Teacher
weights are not needed: head widths come from the checkpoint's tensors, so exporting works on a machine
without the teachers.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch.nn as nn

from radio.config.schema import RunConfig
from radio.models.adapted_student import AdaptedStudent
from radio.models.checkpoint_io import load_exact, read_state_dict
from radio.run.build import build_normalizers, build_trained_module, head_dims_in
from radio.run.layout import MODEL_FILE, NORMALIZERS_FILE, find_checkpoint_dir, load_results_config
from radio.run.teachers import ResolvedTeacher


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
    norm_state = read_state_dict(norm_path)
    normalizers = build_normalizers(cfg, teachers, dims)
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
