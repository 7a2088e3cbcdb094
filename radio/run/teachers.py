"""The one place that turns a teacher entry + the global ``distill`` values into effective settings.

TAO silently lets per-teacher defaults override global ones and feeds raw pixels when a teacher's
normalisation is empty; here every unset per-teacher field takes the global value, and an unset
normalisation the one the registry entry's public weights were trained with (else the dataset
augmentation's mean/std), and ``mode: auto`` is resolved with the rules in docs/losses.md ("Modes").
"""

import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from radio.errors import SpecError

_NAME = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_-]*$")
_RESERVED_NAMES = ("student",)  # the student's view in the data plan
# distill.teacher_precision: what teachers are loaded and run in (dtypes: radio/run/build.py teacher_dtype).
TEACHER_PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class ResolvedTeacher:
    index: int
    name: str
    backbone_type: str
    checkpoint_path: Optional[str]
    strict_loading: bool
    mode: str  # logits | summary | spatial | combo
    loss_type: str  # canonical upper-case name
    loss_lambda: float
    temperature: float
    input_size: int  # patch-aligned resolution when stochastic_resolutions is empty
    patch_size: int
    match_student_resolution: bool
    stochastic_resolutions: Dict[int, float]
    norm_mean: List[float]
    norm_std: List[float]
    summary_token_idx: Optional[int]  # student CLS slot predicting this teacher's summary (None: no summary)
    summary_loss_type: str
    summary_loss_weight: float
    fd_loss_weight: float  # TAO's name, kept in config.yaml; it weights the spatial term (losses/criterion.py)
    use_mlp: bool
    mlp_hidden_size: int
    mlp_num_inner: int
    spatial_mlp_version: str
    spatial_num_inner: int
    feature_normalizer: str
    adaptor: Optional[str] = None  # featsharp: targets come through a FeatSharp upsampler
    upsampler_checkpoint: Optional[str] = None
    do_upsample: bool = False
    mosaic: int = 1  # k: each teacher input tiles k x k samples (spatial mode only)
    teacher_compile: bool = False  # torch.compile the teacher's forward (radio/models/teacher_speed.py)
    teacher_fp8: bool = False  # its block Linears in float8 (radio/models/teacher_speed.py)
    uses_summary: bool = field(init=False)
    uses_spatial: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "uses_summary", self.mode in ("summary", "combo"))
        object.__setattr__(self, "uses_spatial", self.mode in ("spatial", "combo"))

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_teachers(cfg) -> List[ResolvedTeacher]:
    """Every teacher's effective settings, in ``distill.teacher`` order (empty for label-only training)."""
    from radio.data.views import align_to_patch
    from radio.losses.names import (
        normalize_feature_normalizer,
        normalize_summary_loss_type,
        resolve_loss_type,
        resolve_mode,
    )
    from radio.models.registry import get_model_info

    distill, aug = cfg.distill, cfg.dataset.augmentation
    _check_globals(distill)
    infos = [get_model_info(t.model.backbone.type) for t in distill.teacher]
    names = _teacher_names(distill.teacher, infos)
    resolved: List[ResolvedTeacher] = []
    summary_slot = 0
    explicit_slots = {t.summary_token_idx for t in distill.teacher if t.summary_token_idx is not None}
    for i, (t, info, name) in enumerate(zip(distill.teacher, infos, names)):
        path = f"distill.teacher[{i}]"

        def pick(key):
            value = getattr(t, key)
            return getattr(distill, key) if value is None else value

        def prefix(key) -> str:
            """The node an error about ``key`` names: the teacher when it set the value itself, else ``distill``."""
            return path if getattr(t, key) is not None else "distill"

        try:
            mode = resolve_mode(
                pick("mode"),
                pick("loss_type"),
                teacher_has_summary=info.has_summary,
                num_classes=cfg.dataset.num_classes,
                field_prefix=prefix("mode"),
                loss_field_prefix=prefix("loss_type"),
            )
            loss_type = resolve_loss_type(mode, pick("loss_type"), field_prefix=prefix("loss_type"))
            summary_loss_type = normalize_summary_loss_type(
                pick("summary_loss_type"), field=f"{prefix('summary_loss_type')}.summary_loss_type"
            )
            feature_normalizer = normalize_feature_normalizer(
                pick("feature_normalizer"), field=f"{prefix('feature_normalizer')}.feature_normalizer"
            )
        except SpecError as exc:
            raise SpecError(_naming_the_teacher(str(exc), name)) from None

        patch = t.patch_size or info.patch_size
        if t.patch_size and t.patch_size != info.patch_size:
            raise SpecError(
                f"{path}.patch_size={t.patch_size} does not match {info.name}'s patch size {info.patch_size}; "
                "leave it unset or use the model's value."
            )
        match = t.match_student_resolution if t.match_student_resolution is not None else t.input_size is None
        _refuse_ignored_settings(t, path, mode, loss_type, match)
        input_size = cfg.dataset.img_size if match else (t.input_size or info.img_size)
        input_size = align_to_patch(input_size, patch)
        for res in t.stochastic_resolutions:
            if int(res) % patch:
                raise SpecError(f"{path}.stochastic_resolutions has {res}, not a multiple of the patch size {patch}.")
        _check_input_wrappers(t, path, mode, match, input_size, patch)
        if pick("teacher_fp8") and distill.teacher_precision == "fp32":
            raise SpecError(
                f"{prefix('teacher_fp8')}.teacher_fp8 quantises bf16 teachers, but distill.teacher_precision is fp32; "
                "set one of them differently."
            )

        slot = None
        if mode in ("summary", "combo"):
            slot = t.summary_token_idx
            if slot is None:  # the lowest CLS slot no teacher asked for explicitly
                while summary_slot in explicit_slots:
                    summary_slot += 1
                slot = summary_slot
                summary_slot += 1

        resolved.append(
            ResolvedTeacher(
                index=i,
                name=name,
                backbone_type=info.name,
                checkpoint_path=t.pretrained_teacher_model_path,
                strict_loading=t.strict_loading,
                mode=mode,
                loss_type=loss_type,
                loss_lambda=float(pick("loss_lambda")),
                temperature=float(pick("temperature")),
                input_size=input_size,
                patch_size=patch,
                match_student_resolution=bool(match),
                stochastic_resolutions={int(k): float(v) for k, v in t.stochastic_resolutions.items()},
                norm_mean=[float(x) for x in (t.norm_mean or (info.norm[0] if info.norm else aug.norm_mean))],
                norm_std=[float(x) for x in (t.norm_std or (info.norm[1] if info.norm else aug.norm_std))],
                summary_token_idx=slot,
                summary_loss_type=summary_loss_type,
                summary_loss_weight=float(pick("summary_loss_weight")),
                fd_loss_weight=float(pick("fd_loss_weight")),
                use_mlp=bool(pick("use_mlp")),
                mlp_hidden_size=int(pick("mlp_hidden_size")),
                mlp_num_inner=int(pick("mlp_num_inner")),
                spatial_mlp_version=pick("spatial_mlp_version"),
                spatial_num_inner=int(
                    t.spatial_num_inner if t.spatial_num_inner is not None else pick("mlp_num_inner")
                ),
                feature_normalizer=feature_normalizer,
                adaptor=t.adaptor,
                upsampler_checkpoint=t.upsampler_checkpoint,
                do_upsample=bool(t.do_upsample),
                mosaic=int(t.mosaic),
                teacher_compile=bool(pick("teacher_compile")),
                teacher_fp8=bool(pick("teacher_fp8")),
            )
        )
    _check_slots(resolved, cfg)
    return resolved


def teacher_precision(cfg, device_type: str) -> str:
    """``bf16`` or ``fp32``: what the teachers are loaded and run in on a ``device_type`` device (``cuda``,
    ``cpu``). ``distill.teacher_precision`` when set; else bf16 on GPUs (tensor cores) and, on CPU,
    ``train.precision`` (bf16 when the run is bf16, else fp32: CPUs run float32 faster)."""
    chosen = cfg.distill.teacher_precision
    if chosen is not None:
        return chosen
    if device_type == "cuda":
        return "bf16"
    return "bf16" if cfg.train.precision == "bf16" else "fp32"


def resolution_notes(cfg, teachers: List[ResolvedTeacher]) -> List[str]:
    """Start-up notes on the teachers: that there are none (label-only training), and one line per teacher
    whose ``input_size`` is used rounded to its patch size (SigLIP's 384 is run at 378, the same 27x27
    grid), so a changed number never goes unsaid."""
    if not teachers:
        return [
            f"note: distill.teacher is empty: label-only training, the student's classifier learns "
            f"dataset.num_classes={cfg.dataset.num_classes} classes from the labels alone (cross-entropy); "
            "no teacher is built."
        ]
    notes = []
    for t in teachers:
        asked = cfg.distill.teacher[t.index].input_size
        if asked is not None and not t.match_student_resolution and asked != t.input_size:
            notes.append(
                f"note: distill.teacher[{t.index}].input_size={asked} is run at {t.input_size}, the nearest multiple "
                f"of {t.name}'s patch size {t.patch_size} ({t.input_size // t.patch_size}x"
                f"{t.input_size // t.patch_size} tokens)."
            )
    return notes


def _refuse_ignored_settings(t, path: str, mode: str, loss_type: str, match: bool) -> None:
    """A per-teacher setting that would have no effect is an error, not a silent no-op."""
    ignored = []
    if match and t.input_size is not None:
        ignored.append(("input_size", "match_student_resolution is true (the teacher follows the student's size)"))
    if t.summary_loss_type is not None and not (mode == "combo" or (mode == "summary" and loss_type == "CS")):
        ignored.append(
            (
                "summary_loss_type",
                f"it applies in summary mode with loss_type CS or in combo mode, "
                f"and this teacher is {mode} with {loss_type}",
            )
        )
    for key in ("summary_loss_weight", "fd_loss_weight"):
        if getattr(t, key) is not None and mode != "combo":
            ignored.append(
                (key, f"it weighs the two terms of combo mode, and this teacher is {mode} (scale it with loss_lambda)")
            )
    if ignored:
        key, why = ignored[0]
        raise SpecError(f"{path}.{key} is set but would be ignored: {why}. Remove it or change the mode.")


def _check_input_wrappers(t, path: str, mode: str, match: bool, input_size: int, patch: int) -> None:
    """FeatSharp (``adaptor``) and ``mosaic`` change what a teacher sees and returns; both need a fixed teacher
    resolution and change spatial targets only, so settings they would contradict are refused."""
    if (t.upsampler_checkpoint or t.do_upsample) and not t.adaptor:
        raise SpecError(f"{path}: upsampler_checkpoint / do_upsample need adaptor: featsharp; set it or remove them.")
    if t.adaptor:
        if not t.upsampler_checkpoint:
            raise SpecError(f"{path}.adaptor=featsharp needs upsampler_checkpoint: the FeatSharp file to load.")
        if mode not in ("spatial", "combo"):
            raise SpecError(
                f"{path}.adaptor=featsharp changes spatial targets only, and this teacher is in {mode} mode; "
                "use mode spatial or combo, or remove the adaptor."
            )
        if match or t.stochastic_resolutions:
            raise SpecError(
                f"{path}.adaptor=featsharp runs the teacher at the one resolution its upsampler was trained at: set "
                f"{path}.input_size to it and leave match_student_resolution and stochastic_resolutions unset."
            )
        if t.mosaic > 1:
            raise SpecError(f"{path}: mosaic and adaptor=featsharp cannot be combined; use one of them.")
    if t.mosaic > 1:
        if mode != "spatial":
            raise SpecError(
                f"{path}.mosaic={t.mosaic} tiles {t.mosaic}x{t.mosaic} images into one teacher input, so its summary "
                f"would describe several images; use mode spatial for this teacher (it is {mode})."
            )
        if match:
            raise SpecError(f"{path}.mosaic={t.mosaic} needs a fixed teacher resolution: set {path}.input_size.")
        step = t.mosaic * patch
        rounded = f" (input_size {t.input_size} rounded to its patch size)" if t.input_size != input_size else ""
        for res in [input_size, *(int(r) for r in t.stochastic_resolutions)]:
            if res % step:
                raise SpecError(
                    f"{path}.mosaic={t.mosaic}: teacher resolution {res}{rounded if res == input_size else ''} is "
                    f"not a multiple of mosaic x patch size = {step}, so the tiles would not fall on token "
                    "boundaries."
                )


def _check_slots(teachers: List[ResolvedTeacher], cfg) -> None:
    slots = [t.summary_token_idx for t in teachers if t.summary_token_idx is not None]
    if len(set(slots)) != len(slots):
        raise SpecError(
            f"two summary teachers share a student CLS slot (summary_token_idx values {slots}); "
            "give each a distinct one."
        )
    limit = cfg.model.backbone.num_cls_tokens
    if limit is not None and slots and max(slots) >= limit:
        raise SpecError(
            f"a teacher's summary_token_idx={max(slots)} needs model.backbone.num_cls_tokens > {max(slots)} "
            f"(it is {limit})."
        )


def _naming_the_teacher(message: str, name: str) -> str:
    """A setting's error with the teacher it concerns named once, by its effective name, after the field the
    message starts with: ``distill.teacher[0].loss_type (teacher demo_a): 'XX' is not a valid value; ...``."""
    field, sep, rest = re.match(r"(\S+?)(:?\s|$)(.*)", message, re.S).groups()
    return f"{field} (teacher {name}){sep}{rest}"


def _check_globals(distill) -> None:
    """The global enumerations and ``teacher_precision``, named by their own path, whether or not a teacher
    uses them (a per-teacher error then always comes from the teacher's own value)."""
    from radio.config.validate import check_choice
    from radio.losses.names import (
        normalize_feature_normalizer,
        normalize_loss_type,
        normalize_mode,
        normalize_summary_loss_type,
    )

    check_choice("distill.teacher_precision", distill.teacher_precision, TEACHER_PRECISIONS, optional=True)
    checks = {
        "mode": normalize_mode,
        "loss_type": normalize_loss_type,
        "summary_loss_type": normalize_summary_loss_type,
        "feature_normalizer": normalize_feature_normalizer,
    }
    for key, normalize in checks.items():
        value = getattr(distill, key)
        if value is not None:
            normalize(value, field=f"distill.{key}")


def _teacher_names(teachers, infos) -> List[str]:
    """Each teacher's name: its own ``name``, else its registry entry's ``short_name`` (``dinov2_l``; a
    ``timm/`` type: the timm name made key-safe). Unnamed teachers that would share a name take ``_2``,
    ``_3`` ... in list order; two explicit names that are equal are refused."""
    seen: Dict[str, int] = {}
    for i, t in enumerate(teachers):
        if t.name is None:
            continue
        path = f"distill.teacher[{i}]"
        if not _NAME.match(t.name) or t.name in _RESERVED_NAMES:
            raise SpecError(
                f"{path}.name={t.name!r} is not valid: use letters, digits, '_' and '-', not starting with '_' and "
                f"not {', '.join(_RESERVED_NAMES)} (it keys views, metrics and heads)."
            )
        if t.name in seen:
            raise SpecError(
                f"{path} and distill.teacher[{seen[t.name]}] are both called {t.name!r}; give each teacher a "
                "distinct distill.teacher[i].name (it keys views, heads, metrics and checkpoints)."
            )
        seen[t.name] = i
    taken = set(seen)
    names = []
    for t, info in zip(teachers, infos):
        name = t.name
        if name is None:
            base = info.short_name or re.sub(r"[^A-Za-z0-9_-]", "_", info.name.split("/")[-1])
            name, k = base, 1
            while name in taken:
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
        names.append(name)
    return names
