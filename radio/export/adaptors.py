"""Per-teacher adaptors (summary head + spatial head) that predict teacher-space features.

During training the spatial head regresses normalised teacher features (PHI-S / standardize); on export
the normaliser's inverse is folded into the head's output Linear (``output_linear``), so
``spatial(tokens)`` is directly in the teacher's feature space. The summary head predicts the teacher
summary after a non-affine LayerNorm, which is the target it was trained on (``summary_target:
layer_norm`` in the metadata).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file

from radio.models.heads import HeadSpec, fold_affine_into_head
from radio.run.teachers import ResolvedTeacher


def export_adaptor(
    teacher: ResolvedTeacher,
    summary_head: Optional[nn.Module],
    spatial_head: Optional[nn.Module],
    normalizer: Optional[nn.Module],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """-> (state dict with ``summary.*`` / ``spatial.*`` keys, metadata). ``normalizer`` is folded into the
    spatial head."""
    state: Dict[str, torch.Tensor] = {}
    meta: Dict[str, object] = {
        "name": teacher.name,
        "type": teacher.backbone_type,
        "mode": teacher.mode,
        "summary_token_idx": teacher.summary_token_idx,
        "input_size": teacher.input_size,
        "patch_size": teacher.patch_size,
        "norm_mean": list(teacher.norm_mean),
        "norm_std": list(teacher.norm_std),
    }
    if summary_head is not None:
        meta["summary"] = {**summary_head.spec.as_dict(), "summary_target": "layer_norm"}
        state.update({f"summary.{k}": v for k, v in summary_head.state_dict().items()})
    if spatial_head is not None:
        folded = fold_affine_into_head(spatial_head, *normalizer.inverse_affine())
        meta["spatial"] = {**spatial_head.spec.as_dict(), "feature_normalizer_folded": teacher.feature_normalizer}
        state.update({f"spatial.{k}": v for k, v in folded.state_dict().items()})
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, meta


class ExportedAdaptor(nn.Module):
    """An exported adaptor. ``summary(cls_token [B, C]) -> [B, Ds]``;
    ``spatial(tokens [B, N, C]) -> [B, N, Ct]`` in teacher space. Either may be None (by the teacher's mode)."""

    def __init__(self, meta: Dict[str, object]) -> None:
        super().__init__()
        self.meta = meta
        self.summary = HeadSpec.from_dict(meta["summary"]).build() if "summary" in meta else None
        self.spatial = HeadSpec.from_dict(meta["spatial"]).build() if "spatial" in meta else None


def load_adaptor(weights_path: str, meta: Dict[str, object]) -> ExportedAdaptor:
    """Rebuild an adaptor from its safetensors file and its metadata entry in ``export.json``."""
    adaptor = ExportedAdaptor(meta)
    adaptor.load_state_dict(load_file(weights_path), strict=True)
    return adaptor.eval()
