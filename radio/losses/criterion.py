"""Per-teacher criterion: the loss between the student's adapted outputs and one teacher's targets."""

from typing import Dict

import torch
from torch import nn

from radio.losses.functional import per_row_loss, vector_loss
from radio.losses.names import (
    LOGITS_ONLY_LOSS_TYPES,
    MODE_FEATURES,
    normalize_loss_type,
    normalize_mode,
    normalize_summary_loss_type,
)
from radio.losses.spatial import match_grids, tokens
from radio.losses.summary import SummaryLoss, layer_norm_target


class TeacherCriterion(nn.Module):
    """The loss of one teacher in a resolved mode (``logits``, ``summary``, ``spatial`` or ``combo``).

    Each mode compares the feature kinds ``names.MODE_FEATURES`` lists for it, one term per kind:

    - ``logits``: ``loss_type`` on the logits [B, N] (KL / CE at ``temperature``; the element-wise types
      regress the logits directly).
    - ``summary``: the teacher summary [B, D] passes a non-affine LayerNorm; with loss type CS (the
      summary default) the summary loss is ``summary_loss_type`` (``cosine`` is CS itself; ``angle``,
      ``ce``, ``tangent_sphere`` are its variants), any other loss type is applied element-wise.
    - ``spatial``: ``loss_type`` per token of the grid-matched maps [B, C, h, w], mean over tokens.

    ``combo`` has a summary term (``summary_loss_type``) and a spatial term (``loss_type``); its total is
    ``summary_loss_weight`` · summary + ``spatial_loss_weight`` · spatial. ``spatial_loss_weight`` is the
    spec's ``fd_loss_weight`` (TAO's field name): it weights the spatial term whatever its loss type, it
    has nothing to do with loss type FD (docs/losses.md). The two weights only apply in combo mode, where
    they balance the two feature kinds; in a single-kind mode the teacher's ``loss_lambda`` is the only
    scale.

    forward(pred, target) takes dicts with the keys the mode needs (``logits`` [B, N], ``summary``
    [B, D], ``spatial`` [B, C, h, w]). Returns float32 scalars: ``total`` and one entry per term used
    (``logits``, ``summary``, ``spatial``), unweighted, for logging.
    """

    def __init__(
        self,
        mode: str,
        loss_type: str,
        *,
        summary_loss_type: str = "cosine",
        summary_loss_weight: float = 1.0,
        spatial_loss_weight: float = 1.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.mode = normalize_mode(mode)
        if self.mode not in MODE_FEATURES:
            raise ValueError("TeacherCriterion needs a resolved mode; call radio.losses.names.resolve_mode first")
        self.loss_type = normalize_loss_type(loss_type)
        if self.loss_type in LOGITS_ONLY_LOSS_TYPES and self.mode != "logits":
            raise ValueError(f"loss type {self.loss_type} needs mode 'logits', got {self.mode!r}")
        summary_kind = normalize_summary_loss_type(summary_loss_type)
        self.summary_loss_weight = float(summary_loss_weight)
        self.spatial_loss_weight = float(spatial_loss_weight)
        self.temperature = float(temperature)
        # In summary mode an element-wise loss type replaces the summary loss type (see class docstring).
        self.summary_elementwise = self.mode == "summary" and self.loss_type != "CS"
        self.summary_loss = SummaryLoss(summary_kind, self.temperature)

    def _logits_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return vector_loss(self.loss_type, pred, target, temperature=self.temperature)

    def _summary_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.summary_elementwise:
            return vector_loss(self.loss_type, pred, layer_norm_target(target))
        return self.summary_loss(pred, target)

    def _spatial_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = match_grids(pred, target)
        return per_row_loss(self.loss_type, tokens(pred), tokens(target)).mean()

    def forward(self, pred: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # Losses are computed in float32 whatever the dtype of the student's outputs (none of the ops
        # below is one that autocast lowers to bf16/fp16).
        def pair(key: str):
            if key not in pred or key not in target or pred[key] is None or target[key] is None:
                raise KeyError(f"mode {self.mode!r} needs {key!r} in both the prediction and the target")
            return pred[key].float(), target[key].float()

        term = {"logits": self._logits_term, "summary": self._summary_term, "spatial": self._spatial_term}
        features = MODE_FEATURES[self.mode]
        out: Dict[str, torch.Tensor] = {feature: term[feature](*pair(feature)) for feature in features}
        if self.mode == "combo":
            out["total"] = self.summary_loss_weight * out["summary"] + self.spatial_loss_weight * out["spatial"]
        else:
            (only,) = features
            out["total"] = out[only]
        return out

    def log_values(self) -> Dict[str, float]:
        """Running state of the summary loss in use (``angular_std`` for angle/tangent_sphere), for metrics."""
        if "summary" not in MODE_FEATURES[self.mode] or self.summary_elementwise:
            return {}
        return self.summary_loss.log_values()
