"""Everything a run needs, built from the resolved config: student + heads, teachers, losses, data."""

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn

from radio.config.resolve import ResolvedTeacher
from radio.data.loader import TrainLoader
from radio.data.views import ViewPlan, build_view_plan
from radio.losses.criterion import TeacherCriterion
from radio.losses.normalizers import build_feature_normalizer
from radio.models.adapted_student import AdaptedStudent
from radio.models.student import build_student
from radio.models.teacher import FrozenTeacher


@dataclass
class Components:
    model: AdaptedStudent  # the trained module: student + heads
    teachers: Dict[str, FrozenTeacher]  # frozen, bf16, on the device, never wrapped
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
    # Identical initial weights on every rank, whatever the data order.
    torch.manual_seed(cfg.train.seed)
    slots = [t.summary_token_idx + 1 for t in teachers_cfg if t.summary_token_idx is not None]
    student = build_student(cfg.model.backbone, num_summary_slots=max(slots, default=1), vitdet_cfg=cfg.distill.vitdet)
    teachers = {
        t.name: FrozenTeacher(
            t.backbone_type,
            t.checkpoint_path,
            input_size=t.input_size,
            strict=t.strict_loading,
            num_classes=cfg.dataset.num_classes if t.mode == "logits" else 0,
            device=device,
        )
        for t in teachers_cfg
    }
    # Heads are sized from the built teachers: a C-RADIO checkpoint may carry other summary slots than
    # its registry entry.
    dims = {name: {"summary": t.summary_dim, "spatial": t.embed_dim} for name, t in teachers.items()}
    model = AdaptedStudent(student, teachers_cfg, dims, num_classes=cfg.dataset.num_classes)

    phi_s, accum = cfg.distill.phi_s, cfg.train.grad_accumulation_steps
    normalizers = nn.ModuleDict(
        {
            t.name: build_feature_normalizer(
                t.feature_normalizer,
                teachers[t.name].embed_dim,
                # A normaliser counts update() calls, one per micro-batch; the spec counts optimizer steps.
                refresh_every_n_steps=phi_s.refresh_every_n_steps * accum,
                freeze_after_steps=phi_s.freeze_after_steps * accum if phi_s.freeze_after_steps else None,
            )
            for t in teachers_cfg
            if t.uses_spatial
        }
    ).to(device)
    criteria = nn.ModuleDict(
        {
            t.name: TeacherCriterion(
                t.mode,
                t.loss_type,
                summary_loss_type=t.summary_loss_type,
                summary_loss_weight=t.summary_loss_weight,
                fd_loss_weight=t.fd_loss_weight,
                temperature=t.temperature,
            )
            for t in teachers_cfg
        }
    ).to(device)
    plan = build_view_plan(cfg, teachers_cfg, student.patch_size)
    loader = TrainLoader(cfg.dataset, plan, seed=cfg.train.seed, rank=rank, world_size=world_size)
    return Components(model, teachers, normalizers, criteria, plan, loader)
