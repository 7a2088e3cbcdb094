"""The trained module: the student backbone plus one projection head per (teacher, feature kind).

Heads live inside the module that the optimizer and the checkpoint see, so they are trained and saved with
the student (TAO's single-teacher head was never optimised).
"""

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from radio.config.resolve import ResolvedTeacher
from radio.models.heads import build_head


class AdaptedStudent(nn.Module):
    def __init__(
        self,
        student: nn.Module,
        teachers: List[ResolvedTeacher],
        teacher_dims: Dict[str, Dict[str, int]],
        num_classes: int = 0,
    ):
        """teacher_dims: per teacher name, ``summary`` and ``spatial`` widths of the built teacher (a C-RADIO
        checkpoint may carry other summary slots than its registry entry)."""
        super().__init__()
        self.student = student
        width = student.embed_dim
        self.teachers = list(teachers)
        self.summary_heads = nn.ModuleDict()
        self.spatial_heads = nn.ModuleDict()
        for t in self.teachers:
            if t.uses_summary:
                self.summary_heads[t.name] = self._head(
                    t, width, teacher_dims[t.name]["summary"], t.mlp_num_inner, "v2"
                )
            if t.uses_spatial:
                self.spatial_heads[t.name] = self._head(
                    t, width, teacher_dims[t.name]["spatial"], t.spatial_num_inner, t.spatial_mlp_version
                )
        # Logits come from CLS slot 0 through one classifier (classification KD: labels and teacher logits).
        self.classifier = nn.Linear(width, num_classes) if num_classes > 0 else None

    @staticmethod
    def _head(t: ResolvedTeacher, in_dim: int, out_dim: int, num_inner: int, version: str) -> nn.Module:
        if not t.use_mlp:
            return nn.Linear(in_dim, out_dim)
        return build_head(version, in_dim, t.mlp_hidden_size, out_dim, num_inner)

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
            if t.name in self.summary_heads:
                pred["summary"] = self.summary_heads[t.name](cls_tokens[:, t.summary_token_idx])
            if t.name in self.spatial_heads:
                mapped = self.spatial_heads[t.name](tokens)  # [B,h*w,Ct]
                pred["spatial"] = mapped.transpose(1, 2).reshape(b, -1, h, w)
            if t.mode == "logits":
                pred["logits"] = logits
            preds[t.name] = pred
        if logits is not None:
            preds["_logits"] = {"logits": logits}
        return preds
