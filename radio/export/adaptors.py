"""Per-teacher adaptors (summary head + spatial head) that predict teacher-space features.

During training the spatial head regresses normalised teacher features (PHI-S / standardize); on export
the normaliser's inverse is folded into the head's last Linear, so ``spatial(tokens)`` is directly in the
teacher's feature space. The summary head predicts the teacher summary after a non-affine LayerNorm,
which is the target it was trained on (``summary_target: layer_norm`` in the metadata).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file

from radio.config.resolve import ResolvedTeacher
from radio.losses.normalizers import fold_inverse_into_head
from radio.models.heads import build_head


def _head_spec(head: nn.Module, version: str, num_inner: int) -> Dict[str, object]:
    """How to rebuild ``head``: {kind: linear | v2 | attn, in_dim, out_dim, hidden, num_inner}."""
    if isinstance(head, nn.Linear):
        return {"kind": "linear", "in_dim": head.in_features, "out_dim": head.out_features}
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    fc1 = head.mlp.fc1 if version == "attn" else head.fc1
    return {
        "kind": version,
        "in_dim": fc1.in_features,
        "out_dim": linears[-1].out_features,
        "hidden": fc1.out_features,
        "num_inner": num_inner,
    }


def build_head_from_spec(spec: Dict[str, object]) -> nn.Module:
    if spec["kind"] == "linear":
        return nn.Linear(int(spec["in_dim"]), int(spec["out_dim"]))
    return build_head(
        str(spec["kind"]), int(spec["in_dim"]), int(spec["hidden"]), int(spec["out_dim"]), int(spec["num_inner"])
    )


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
        meta["summary"] = {**_head_spec(summary_head, "v2", teacher.mlp_num_inner), "summary_target": "layer_norm"}
        state.update({f"summary.{k}": v for k, v in summary_head.state_dict().items()})
    if spatial_head is not None:
        folded = fold_inverse_into_head(spatial_head, normalizer)
        meta["spatial"] = {
            **_head_spec(spatial_head, teacher.spatial_mlp_version, teacher.spatial_num_inner),
            "feature_normalizer_folded": teacher.feature_normalizer,
        }
        state.update({f"spatial.{k}": v for k, v in folded.state_dict().items()})
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, meta


class ExportedAdaptor(nn.Module):
    """An exported adaptor. ``summary(cls_token [B, C]) -> [B, Ds]``;
    ``spatial(tokens [B, N, C]) -> [B, N, Ct]`` in teacher space. Either may be None (by the teacher's mode)."""

    def __init__(self, meta: Dict[str, object]) -> None:
        super().__init__()
        self.meta = meta
        self.summary = build_head_from_spec(meta["summary"]) if "summary" in meta else None
        self.spatial = build_head_from_spec(meta["spatial"]) if "spatial" in meta else None


def load_adaptor(weights_path: str, meta: Dict[str, object]) -> ExportedAdaptor:
    """Rebuild an adaptor from its safetensors file and its metadata entry in ``export.json``."""
    adaptor = ExportedAdaptor(meta)
    adaptor.load_state_dict(load_file(weights_path), strict=True)
    return adaptor.eval()
