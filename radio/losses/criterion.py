"""Per-teacher criterion: the loss between the student's adapted outputs and one teacher's targets."""

from typing import Dict, Optional

import torch
from torch import nn

from radio.losses.functional import per_row_loss, vector_loss, weighted_mean
from radio.losses.names import (
    LOGITS_ONLY_LOSS_TYPES,
    normalize_loss_type,
    normalize_mode,
    normalize_summary_loss_type,
)
from radio.losses.spatial import GridSize, match_grids, tokens
from radio.losses.summary import SummaryLoss, layer_norm_target


class TeacherCriterion(nn.Module):
    """The loss of one teacher in a resolved mode (``logits``, ``summary``, ``spatial`` or ``combo``).

    Which loss applies to which features:

    - ``logits``: ``loss_type`` on the logits [B, N] (KL / CE at ``temperature``; the element-wise types
      regress the logits directly).
    - ``summary``: the teacher summary [B, D] passes a non-affine LayerNorm; with loss type CS (the
      summary default) the summary loss is ``summary_loss_type`` (``cosine`` is CS itself; ``angle``,
      ``ce``, ``tangent_sphere`` are its variants), any other loss type is applied element-wise.
    - ``spatial``: ``loss_type`` per token of the grid-matched maps [B, C, h, w], masked mean.
    - ``combo``: ``summary_loss_weight`` · summary term (``summary_loss_type``) + ``fd_loss_weight`` ·
      spatial term (``loss_type``). The two weights only apply in combo mode, where they balance the two
      feature kinds; in a single-kind mode the teacher's ``loss_lambda`` is the only scale.

    forward(pred, target, valid_mask=None) takes dicts with the keys the mode needs (``logits`` [B, N],
    ``summary`` [B, D], ``spatial`` [B, C, h, w]); valid_mask is bool [B, h, w] or [B, 1, h, w] on any
    grid (True = real image content). Returns float32 scalars: ``total`` and one entry per term used
    (``logits``, ``summary``, ``spatial``), unweighted, for logging.
    """

    def __init__(
        self,
        mode: str,
        loss_type: str,
        *,
        summary_loss_type: str = "cosine",
        summary_loss_weight: float = 1.0,
        fd_loss_weight: float = 1.0,
        temperature: float = 1.0,
        spatial_target_size: Optional[GridSize] = None,
    ):
        super().__init__()
        self.mode = normalize_mode(mode)
        if self.mode == "auto":
            raise ValueError("TeacherCriterion needs a resolved mode; call radio.losses.names.resolve_mode first")
        self.loss_type = normalize_loss_type(loss_type)
        if self.loss_type in LOGITS_ONLY_LOSS_TYPES and self.mode != "logits":
            raise ValueError(f"loss type {self.loss_type} needs mode 'logits', got {self.mode!r}")
        summary_kind = normalize_summary_loss_type(summary_loss_type)
        self.summary_weight = float(summary_loss_weight)
        self.spatial_weight = float(fd_loss_weight)
        self.temperature = float(temperature)
        self.spatial_target_size = spatial_target_size
        # In summary mode an element-wise loss type replaces the summary loss type (see class docstring).
        self.summary_elementwise = self.mode == "summary" and self.loss_type != "CS"
        self.summary_loss = SummaryLoss(summary_kind, self.temperature)

    def _summary_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.summary_elementwise:
            return vector_loss(self.loss_type, pred, layer_norm_target(target))
        return self.summary_loss(pred, target)

    def _spatial_term(
        self, pred: torch.Tensor, target: torch.Tensor, valid_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        pred, target, mask = match_grids(pred, target, valid_mask, self.spatial_target_size)
        pred_rows, target_rows = tokens(pred), tokens(target)
        if mask is None:
            return per_row_loss(self.loss_type, pred_rows, target_rows).mean()
        valid = mask.reshape(-1, 1)
        # Zero the masked-out tokens before the loss, not after: padding may hold inf/NaN, and NaN · 0
        # would still poison the sum and the gradients.
        pred_rows = torch.where(valid, pred_rows, torch.zeros_like(pred_rows))
        target_rows = torch.where(valid, target_rows, torch.zeros_like(target_rows))
        return weighted_mean(per_row_loss(self.loss_type, pred_rows, target_rows), valid[:, 0])

    def forward(
        self,
        pred: Dict[str, torch.Tensor],
        target: Dict[str, torch.Tensor],
        valid_mask: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        # Losses are computed in float32 whatever the dtype of the student's outputs (none of the ops
        # below is one that autocast lowers to bf16/fp16).
        def pair(key: str):
            if key not in pred or key not in target or pred[key] is None or target[key] is None:
                raise KeyError(f"mode {self.mode!r} needs {key!r} in both the prediction and the target")
            return pred[key].float(), target[key].float()

        out: Dict[str, torch.Tensor] = {}
        if self.mode == "logits":
            out["logits"] = vector_loss(self.loss_type, *pair("logits"), temperature=self.temperature)
            out["total"] = out["logits"]
        elif self.mode == "summary":
            out["summary"] = self._summary_term(*pair("summary"))
            out["total"] = out["summary"]
        elif self.mode == "spatial":
            out["spatial"] = self._spatial_term(*pair("spatial"), valid_mask)
            out["total"] = out["spatial"]
        else:
            out["summary"] = self._summary_term(*pair("summary"))
            out["spatial"] = self._spatial_term(*pair("spatial"), valid_mask)
            out["total"] = self.summary_weight * out["summary"] + self.spatial_weight * out["spatial"]
        return out

    def log_values(self) -> Dict[str, float]:
        """Running state of the summary loss in use (``angular_std`` for angle/tangent_sphere), for metrics."""
        if self.mode not in ("summary", "combo") or self.summary_elementwise:
            return {}
        return self.summary_loss.log_values()
