"""The one builder of a run's components from its config and resolved teachers.

Training (``engine/loop.py``), ``radio eval`` and ``radio export`` all assemble through these functions, so
the trained module, its heads, the normalisers and the teachers' views are built one way everywhere.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from radio.data.loader import TrainLoader
from radio.data.mosaic import mosaic_pack, mosaic_unpack
from radio.data.views import ViewPlan, ViewSpec, make_view
from radio.errors import CheckpointError, SpecError
from radio.losses.criterion import TeacherCriterion
from radio.losses.normalizers import build_feature_normalizer
from radio.models.adapted_student import AdaptedStudent, TeacherHeads
from radio.models.heads import HeadSpec
from radio.models.student import build_student
from radio.models.teacher import FrozenTeacher, TeacherOutput
from radio.phases import NO_PHASES
from radio.run.teachers import ResolvedTeacher, teacher_precision

HeadDims = Dict[str, Dict[str, int]]  # teacher name -> {"summary": width, "spatial": width}
_TEACHER_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # run/teachers.py TEACHER_PRECISIONS


def summary_slots(teachers: List[ResolvedTeacher]) -> int:
    """CLS slots the student needs so that every summary teacher has its own."""
    return max((t.summary_token_idx + 1 for t in teachers if t.summary_token_idx is not None), default=1)


def teacher_dtype(cfg, device: torch.device) -> torch.dtype:
    """The dtype teachers are loaded and run in on ``device``, in training and in ``radio eval``
    (``distill.teacher_precision``; its default: ``run/teachers.py`` ``teacher_precision``)."""
    return _TEACHER_DTYPES[teacher_precision(cfg, torch.device(device).type)]


def build_teachers(
    teachers: List[ResolvedTeacher], *, num_classes: int, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> Dict[str, FrozenTeacher]:
    """Frozen teachers on ``device`` in ``dtype`` (a run's is ``teacher_dtype``; never wrapped or sharded), each
    with its FeatSharp upsampler when it has one, compiled or in FP8 as its ``teacher_compile`` / ``teacher_fp8``
    say. A checkpoint that does not load raises ``CheckpointError``, FP8 where it cannot run ``SpecError``, naming
    the teacher."""
    built = {}
    for t in teachers:
        try:
            built[t.name] = FrozenTeacher(
                t.backbone_type,
                t.checkpoint_path,
                input_size=t.input_size,
                strict=t.strict_loading,
                num_classes=num_classes if t.mode == "logits" else 0,
                device=device,
                dtype=dtype,
                featsharp_checkpoint=t.upsampler_checkpoint if t.adaptor else None,
                do_upsample=t.do_upsample,
                compiled=t.teacher_compile,
                fp8=t.teacher_fp8,
            )
        except CheckpointError as exc:
            raise CheckpointError(f"teacher {t.name}: {exc}") from None
        except SpecError as exc:
            raise SpecError(f"teacher {t.name} (distill.teacher[{t.index}]): {exc}") from None
    return built


def teacher_dims(teachers: Dict[str, FrozenTeacher]) -> HeadDims:
    """Head output widths from the built teachers (a C-RADIO checkpoint may carry other summary slots than
    its registry entry)."""
    return {name: {"summary": t.summary_dim, "spatial": t.embed_dim} for name, t in teachers.items()}


def head_spec(t: ResolvedTeacher, kind: str, in_dim: int, out_dim: int) -> HeadSpec:
    """The ``summary`` or ``spatial`` head of teacher ``t``: a Linear without ``use_mlp``, else its MLP."""
    if not t.use_mlp:
        return HeadSpec("linear", in_dim, out_dim)
    if kind == "summary":
        return HeadSpec("v2", in_dim, out_dim, t.mlp_hidden_size, t.mlp_num_inner)
    return HeadSpec(t.spatial_mlp_version, in_dim, out_dim, t.mlp_hidden_size, t.spatial_num_inner)


def head_dims_in(state: Dict[str, torch.Tensor], teachers: List[ResolvedTeacher], path: str) -> HeadDims:
    """Head output widths read from the trained module's state dict at ``path`` (no teacher weights needed);
    ``CheckpointError`` when a head the teachers need is not there."""
    dims: HeadDims = {}
    for t in teachers:
        dims[t.name] = {}
        for kind, used in (("summary", t.uses_summary), ("spatial", t.uses_spatial)):
            key = f"{kind}_heads.{t.name}.{head_spec(t, kind, 0, 0).output_weight_key}"
            if used and key not in state:
                raise CheckpointError(
                    f"{path}: no {kind} head for teacher {t.name!r} ({key}); the checkpoint is not from this run."
                )
            if used:
                dims[t.name][kind] = int(state[key].shape[0])
    return dims


def build_trained_module(cfg, teachers: List[ResolvedTeacher], dims: HeadDims, *, pretrained: bool = True):
    """Student + one head per (teacher, kind). ``pretrained=False``: no ``pretrained_backbone_path`` (the
    weights come from a checkpoint)."""
    backbone = cfg.model.backbone
    if not pretrained:
        backbone = OmegaConf.merge(backbone, {"pretrained_backbone_path": None})
    student = build_student(backbone, num_summary_slots=summary_slots(teachers), vitdet_cfg=cfg.distill.vitdet)
    width = student.embed_dim

    def spec(t: ResolvedTeacher, kind: str, used: bool) -> Optional[HeadSpec]:
        return head_spec(t, kind, width, dims[t.name][kind]) if used else None

    heads = [
        TeacherHeads(
            t.name,
            summary=spec(t, "summary", t.uses_summary),
            summary_slot=t.summary_token_idx,
            spatial=spec(t, "spatial", t.uses_spatial),
            logits=t.mode == "logits",
        )
        for t in teachers
    ]
    return AdaptedStudent(student, heads, num_classes=cfg.dataset.num_classes)


def build_normalizers(cfg, teachers: List[ResolvedTeacher], dims: HeadDims) -> nn.ModuleDict:
    """Per spatial teacher, its target normaliser (``feature_normalizer``) on the schedule of ``distill.phi_s``."""
    phi_s = cfg.distill.phi_s
    return nn.ModuleDict(
        {
            t.name: build_feature_normalizer(
                t.feature_normalizer,
                dims[t.name]["spatial"],
                refresh_every_n_steps=phi_s.refresh_every_n_steps,
                freeze_after_steps=phi_s.freeze_after_steps,
            )
            for t in teachers
            if t.uses_spatial
        }
    )


def build_criteria(teachers: List[ResolvedTeacher]) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            t.name: TeacherCriterion(
                t.mode,
                t.loss_type,
                summary_loss_type=t.summary_loss_type,
                summary_loss_weight=t.summary_loss_weight,
                spatial_loss_weight=t.fd_loss_weight,
                temperature=t.temperature,
            )
            for t in teachers
        }
    )


def build_view_plan(cfg, teachers: List[ResolvedTeacher], student_patch: int) -> ViewPlan:
    """The student's view from ``dataset`` and one per teacher, seeded by ``train.seed``."""
    augmentation = cfg.dataset.augmentation
    student = ViewSpec(
        name="student",
        size=int(cfg.dataset.img_size),
        patch_size=student_patch,
        stochastic_resolutions={int(k): float(v) for k, v in augmentation.stochastic_resolutions.items()},
        mean=list(augmentation.norm_mean),
        std=list(augmentation.norm_std),
    )
    return ViewPlan(student=student, teachers=[teacher_view(t) for t in teachers], seed=cfg.train.seed)


def teacher_view(t: ResolvedTeacher) -> ViewSpec:
    """The per-sample view of teacher ``t``. A FeatSharp teacher takes its image ``input_factor`` times larger
    (its tiles are cut from it); a mosaic teacher's samples are ``mosaic`` times smaller than its input, which
    ``teacher_outputs`` tiles k x k. Sizes drawn from ``stochastic_resolutions`` scale the same way."""
    scale_up, scale_down = (featsharp_input_factor(t), 1) if t.adaptor else (1, t.mosaic)
    return ViewSpec(
        name=t.name,
        size=t.input_size * scale_up // scale_down,
        patch_size=t.patch_size * scale_up,
        stochastic_resolutions={r // scale_down: p for r, p in t.stochastic_resolutions.items()},
        mean=list(t.norm_mean),
        std=list(t.norm_std),
        follow="student" if t.match_student_resolution else None,
    )


def featsharp_input_factor(t: ResolvedTeacher) -> int:
    """How much larger than ``input_size`` the image of FeatSharp teacher ``t`` is, read from its file (which
    must fit the teacher: ``check_featsharp_file``)."""
    from radio.models.featsharp import check_featsharp_file
    from radio.models.registry import get_model_info

    return check_featsharp_file(
        t.upsampler_checkpoint,
        embed_dim=get_model_info(t.backbone_type).embed_dim,
        patch_size=t.patch_size,
        input_size=t.input_size,
        do_upsample=t.do_upsample,
    )


def teacher_outputs(
    teachers: Dict[str, FrozenTeacher],
    specs: List[ResolvedTeacher],
    images: torch.Tensor,
    sizes: Optional[Dict[str, int]] = None,
    phases=NO_PHASES,
) -> Dict[str, TeacherOutput]:
    """Each built teacher's outputs on uint8 crops [B, 3, S, S], at its own view: resolution ``sizes[name]``
    (the step's, in training) or its default view (``teacher_view``), and its normalisation. A mosaic
    teacher runs on k x k tiles of those views and its spatial map is cut back per sample. ``phases``
    (``radio/phases.py``) times each teacher as ``teacher/<name>``."""
    outputs = {}
    for t in specs:
        if t.name not in teachers:
            continue
        teacher = teachers[t.name]
        with phases.phase(f"teacher/{t.name}"):
            size = sizes[t.name] if sizes is not None else _default_view_size(t, teacher)
            view = make_view(images.to(teacher.device), size, t.norm_mean, t.norm_std)
            out = teacher(mosaic_pack(view, t.mosaic))
            if t.mosaic > 1:  # spatial mode only (run/teachers.py): no summary or logits to cut
                out = TeacherOutput(spatial=mosaic_unpack(out.spatial, t.mosaic, len(view)), summary=None, logits=None)
        outputs[t.name] = out
    return outputs


def _default_view_size(t: ResolvedTeacher, teacher: FrozenTeacher) -> int:
    factor = teacher.adaptor.input_factor if teacher.adaptor is not None else 1
    return t.input_size * factor // t.mosaic


@dataclass
class Components:
    """What training needs, built (``build_components``)."""

    model: AdaptedStudent  # the trained module: student + heads
    teachers: Dict[str, FrozenTeacher]  # frozen, in teacher_dtype, on the device, never wrapped; {}: label-only
    normalizers: nn.ModuleDict  # spatial target normalisers (PHI-S ...), per spatial teacher
    criteria: nn.ModuleDict  # TeacherCriterion per teacher
    plan: ViewPlan
    loader: TrainLoader

    @property
    def loss_state(self) -> nn.ModuleDict:
        """Non-trained state that must survive a resume: normaliser statistics, losses' running state."""
        return nn.ModuleDict({"normalizers": self.normalizers, "criteria": self.criteria})


def build_components(
    cfg, teachers_cfg: List[ResolvedTeacher], *, device: torch.device, rank: int, world_size: int
) -> Components:
    # Identical initial weights on every rank, whatever the data order. Teachers draw from the seed too
    # (a non-strict load keeps random values for missing keys) but leave the student's stream as it was.
    torch.manual_seed(cfg.train.seed)
    with torch.random.fork_rng(devices=[]):
        teachers = build_teachers(
            teachers_cfg, num_classes=cfg.dataset.num_classes, device=device, dtype=teacher_dtype(cfg, device)
        )
    dims = teacher_dims(teachers)
    model = build_trained_module(cfg, teachers_cfg, dims)
    plan = build_view_plan(cfg, teachers_cfg, model.student.patch_size)
    return Components(
        model=model,
        teachers=teachers,
        normalizers=build_normalizers(cfg, teachers_cfg, dims).to(device),
        criteria=build_criteria(teachers_cfg).to(device),
        plan=plan,
        loader=TrainLoader(cfg.dataset, plan, seed=cfg.train.seed, rank=rank, world_size=world_size),
    )
