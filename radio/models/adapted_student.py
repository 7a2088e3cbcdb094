"""The trained module: the student backbone plus one projection head per (teacher, feature kind).

Heads live inside the module that the optimizer and the checkpoint see, so they are trained and saved with
the student (TAO's single-teacher head was never optimised).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from radio.models.heads import HeadSpec


@dataclass(frozen=True)
class TeacherHeads:
    """One teacher's part of the trained module: its summary head reads student CLS slot ``summary_slot``,
    its spatial head the patch tokens; ``logits``: the teacher is distilled on the shared classifier."""

    name: str
    summary: Optional[HeadSpec] = None
    summary_slot: Optional[int] = None
    spatial: Optional[HeadSpec] = None
    logits: bool = False


class AdaptedStudent(nn.Module):
    def __init__(self, student: nn.Module, teachers: List[TeacherHeads], num_classes: int = 0):
        super().__init__()
        self.student = student
        self.teachers = list(teachers)
        self.summary_heads = nn.ModuleDict()
        self.spatial_heads = nn.ModuleDict()
        for t in self.teachers:  # per teacher, summary then spatial: the order heads draw their init
            if t.summary is not None:
                self.summary_heads[t.name] = t.summary.build()
            if t.spatial is not None:
                self.spatial_heads[t.name] = t.spatial.build()
        # Logits come from CLS slot 0 through one classifier (classification KD: labels and teacher logits).
        self.classifier = nn.Linear(student.embed_dim, num_classes) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, vitdet_window: Optional[int] = None) -> Dict[str, Dict[str, torch.Tensor]]:
        """x: [B,3,H,W] normalised. Returns ``{teacher name: {"summary": [B,Ds], "spatial": [B,Ct,h,w],
        "logits": [B,N]}}`` (only the kinds each teacher is distilled on) and ``"_logits"`` when classifying."""
        out = self.student(x, vitdet_window=vitdet_window)
        cls_tokens, spatial = out.cls_tokens, out.spatial  # [B,K,C], [B,C,h,w]
        b, c, h, w = spatial.shape
        tokens = spatial.flatten(2).transpose(1, 2)  # [B,h*w,C]
        logits = self.classifier(cls_tokens[:, 0]) if self.classifier is not None else None
        preds: Dict[str, Dict[str, torch.Tensor]] = {}
        for t in self.teachers:
            pred: Dict[str, torch.Tensor] = {}
            if t.summary is not None:
                pred["summary"] = self.summary_heads[t.name](cls_tokens[:, t.summary_slot])
            if t.spatial is not None:
                mapped = self.spatial_heads[t.name](tokens)  # [B,h*w,Ct]
                pred["spatial"] = mapped.transpose(1, 2).reshape(b, -1, h, w)
            if t.logits:
                pred["logits"] = logits
            preds[t.name] = pred
        if logits is not None:
            preds["_logits"] = {"logits": logits}
        return preds
