"""Spec file + ``key=value`` overrides -> a typed, validated ``RunConfig``.

Everything that can go wrong here is the user's to fix, so every failure is a ``SpecError`` whose message
names the field path, the bad value and what would be valid (closest key names for typos).
"""

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from radio.config.schema import RunConfig, TeacherConfig
from radio.config.validate import validate_config
from radio.errors import SpecError

# ``task`` -> (schema dataclass, its semantic check). This module knows backbone distillation's; a caller that
# knows more tasks passes them (``radio/run/spec.py`` adds ``detection``).
Tasks = Mapping[str, Tuple[type, Callable[[Any], None]]]
BACKBONE_TASKS: Tasks = {"distill": (RunConfig, validate_config)}


def load_config(spec_path: Optional[str], overrides: Sequence[str] = (), tasks: Tasks = BACKBONE_TASKS) -> RunConfig:
    """Merge the schema defaults, the YAML file (if any) and the dot-list overrides; validate (ranges,
    lengths, registry names: ``radio.run.spec.load_run_config`` is the complete check a run starts from).
    The spec's ``task`` (default ``distill``) picks the schema and the check from ``tasks``.

    Returns an OmegaConf-backed config (attribute access, typed, read-only structure).
    """
    raw = _read_yaml(spec_path) if spec_path else {}
    schema, validate = tasks[spec_task(raw, overrides, tasks)]
    if schema is RunConfig:
        _normalise_teacher_list(raw)
        _check_teachers(raw)
    cfg = OmegaConf.structured(schema)
    cfg = _merge(cfg, OmegaConf.create(raw), source=spec_path or "defaults")
    for item in overrides:
        _apply_override(cfg, item)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SpecError(
            f"{', '.join(missing)} must be set (in the spec file or as `{missing[0]}=...` on the command line)."
        )
    validate(cfg)
    return cfg


def spec_task(raw: dict, overrides: Sequence[str], tasks: Tasks) -> str:
    """The spec's ``task`` (the last ``task=`` override wins): which schema the rest of it is read with."""
    task = raw.get("task", "distill")
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "task":
            task = value.strip()
    if task not in tasks:
        raise SpecError(f"task={task!r} is not valid; use one of: {', '.join(tasks)}.")
    return task


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (keep one)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {path!r} does not exist (pass an existing YAML file with -e/--spec).")
    try:
        with open(p, encoding="utf-8") as f:  # a stream, so YAML errors name the file
            data = yaml.load(f, Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path!r} is not a text file (expected UTF-8 YAML).") from None
    except OSError as exc:
        raise SpecError(f"spec file {path!r} cannot be read ({exc.strerror or exc}).") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path!r} must hold a mapping of sections (results_dir, model, dataset, ...).")
    return data


def _normalise_teacher_list(raw: dict) -> None:
    """``distill.teacher`` may be a single mapping: treat it as a list of one."""
    distill = raw.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("teacher"), dict):
        distill["teacher"] = [distill["teacher"]]


def _check_teachers(raw: dict) -> None:
    """Merge each teacher alone first: OmegaConf loses the list index in error paths of list items."""
    distill = raw.get("distill")
    teachers = distill.get("teacher") if isinstance(distill, dict) else None
    if not isinstance(teachers, list):
        return
    for i, entry in enumerate(teachers):
        prefix = f"distill.teacher[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f"{prefix} must be a mapping with at least model.backbone.type, got {entry!r}.")
        _merge(OmegaConf.structured(TeacherConfig), OmegaConf.create(entry), source="spec", prefix=prefix)


def _merge(base: DictConfig, other: DictConfig, source: str, prefix: str = "") -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise _explain(exc, source, prefix) from None


def _apply_override(cfg: DictConfig, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SpecError(f"override {item!r} must look like key=value (e.g. train.max_steps=100).")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    teacher_list = OmegaConf.is_list(cfg.distill.teacher)  # a detection spec has one teacher, a mapping
    if key == "distill.teacher" and isinstance(value, dict) and teacher_list:
        value = [value]
    index = re.match(r"distill\.teacher\.(\d+)\.", key)
    if index and teacher_list and int(index.group(1)) >= len(cfg.distill.teacher):
        count = len(cfg.distill.teacher)
        raise SpecError(
            f"override {item!r} names distill.teacher[{index.group(1)}], but the spec lists {count} teacher(s) "
            f"(indices 0..{count - 1}); add the teacher to the spec, or set the whole list with "
            "distill.teacher=[{...}, ...]."
        )
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as exc:
        if "incompatible container types" in str(exc):
            given, wanted = (
                ("a list", "a mapping {key: value, ...}") if isinstance(value, list) else ("a mapping", "a list [...]")
            )
            raise SpecError(
                f"{key} takes {wanted}, not {given} (override {item!r}); e.g. "
                "dataset.augmentation.stochastic_resolutions='{224: 0.5, 448: 0.5}' or "
                "distill.teacher.0.norm_mean='[0.5, 0.5, 0.5]'."
            ) from None
        raise _explain(exc, f"override {item!r}") from None


def _explain(exc: OmegaConfBaseException, source: str, prefix: str = "") -> SpecError:
    path = _join(prefix, getattr(exc, "full_key", None) or getattr(exc, "key", None) or "")
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        valid = _valid_keys(getattr(exc, "object_type", None))
        bad = str(getattr(exc, "key", path)).split(".")[-1]
        close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.5)
        hint = f" Did you mean {_join(path.rpartition('.')[0], close[0])!r}?" if close else ""
        listing = f" Valid keys there: {', '.join(valid)}." if valid else ""
        return SpecError(f"unknown key {path!r} in {source}.{hint}{listing}")
    if isinstance(exc, MissingMandatoryValue):
        return SpecError(f"{path} must be set ({source}).")
    first_line = str(getattr(exc, "msg", exc)).splitlines()[0]
    return SpecError(f"invalid value for {path!r} in {source}: {first_line}.")


def _valid_keys(object_type: Any) -> List[str]:
    if object_type is not None and dataclasses.is_dataclass(object_type):
        return [f.name for f in dataclasses.fields(object_type)]
    return []


def _join(prefix: str, key: str) -> str:
    key = str(key)
    if not prefix:
        return key
    return f"{prefix}.{key}" if key else prefix
