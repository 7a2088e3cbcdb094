"""``radio distill --print-config``: the fully resolved config, then each teacher's effective settings."""
from typing import List

from omegaconf import OmegaConf

from radio.config.resolve import ResolvedTeacher

_TEACHER_SUMMARY_FIELDS = (
    "mode", "loss_type", "loss_lambda", "temperature", "input_size", "patch_size", "match_student_resolution",
    "stochastic_resolutions", "norm_mean", "norm_std", "summary_token_idx", "summary_loss_type",
    "feature_normalizer", "checkpoint_path",
)


def format_resolved_config(cfg, teachers: List[ResolvedTeacher]) -> str:
    lines = [OmegaConf.to_yaml(cfg, resolve=True).rstrip(), "", "# effective settings per teacher", "resolved_teachers:"]
    for t in teachers:
        lines.append(f"  - name: {t.name}")
        lines.append(f"    backbone: {t.backbone_type}")
        for key in _TEACHER_SUMMARY_FIELDS:
            lines.append(f"    {key}: {_fmt(getattr(t, key))}")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
