"""``radio distill --print-config``: the fully resolved config, then every teacher's effective settings."""

from typing import List

from omegaconf import OmegaConf

from radio.run.teachers import ResolvedTeacher, teacher_precision


def format_resolved_config(cfg, teachers: List[ResolvedTeacher]) -> str:
    lines = [
        OmegaConf.to_yaml(cfg, resolve=True).rstrip(),
        "",
        "# effective settings per teacher",
        "resolved_teachers:",
    ]
    for t in teachers:
        fields = t.as_dict()
        lines.append(f"  - name: {fields.pop('name')}")
        lines.extend(f"    {key}: {_fmt(value)}" for key, value in fields.items())
    if not teachers:
        lines[-1] = "resolved_teachers: []  # none: label-only training on dataset.num_classes labels"
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        why = (
            "distill.teacher_precision"
            if cfg.distill.teacher_precision
            else "default: bf16 on GPU, else train.precision"
        )
        lines.append(f"# teachers load and run in {teacher_precision(cfg, device)} on this machine ({device}; {why})")
    return "\n".join(lines)


def _fmt(value) -> str:
    """A YAML flow scalar/collection, as in the config above (``null``, ``true``), so a line can be copied into
    a spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
