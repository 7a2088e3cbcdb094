"""SAM (Segment Anything) image encoders as spatial-only teachers, and the ``segment_anything`` checkpoint layout.

SAM's image encoder is a ViT/16 with windowed attention (window 14, a few global blocks), decomposed relative
position biases and an absolute position grid (64x64 at 1024 px), followed by a conv neck down to 256
channels. The neck map [B, 256, H/16, W/16] is what SAM's mask decoder reads and what the student distils;
SAM has no summary vector. Key names are in ``docs/checkpoint_layouts.md``.
"""

import re
from functools import partial
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models.vision_transformer_sam import VisionTransformerSAM, checkpoint_filter_fn

from radio.models.checkpoint_io import LoadReport

StateDict = Dict[str, torch.Tensor]

SAM_PATCH = 16
_ENCODER = "image_encoder."
_NOT_ENCODER = {
    "prompt_encoder.": "SAM prompt encoder, not part of the image encoder",
    "mask_decoder.": "SAM mask decoder, not part of the image encoder",
}
_REL_POS = re.compile(r"blocks\.\d+\.attn\.rel_pos_[hw]$")


class SamImageEncoder(VisionTransformerSAM):
    """timm's ``VisionTransformerSAM`` (samvit keys, SAM's LayerNorm eps 1e-6) as a registry teacher.

    ``forward_features``: x [B, 3, H, W] -> neck map [B, neck_chans, H/16, W/16]; H and W may be any multiple
    of 16 (timm resamples the position grid and the global blocks' relative position tables to the input).
    ``forward_head``: [B, 0], SAM has no summary. ``embed_dim`` is the neck width, the channels of the spatial
    map as for every registry model; the transformer's own width is ``trunk_dim``.
    """

    num_prefix_tokens = 0  # no CLS / register tokens

    def __init__(
        self,
        *,
        img_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: Sequence[int],
        window_size: int = 14,
        neck_chans: int = 256,
        **kwargs,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=SAM_PATCH,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=window_size,
            use_rel_pos=True,
            neck_chans=neck_chans,
            num_classes=0,
            # SAM's blocks use eps 1e-6; timm's samvit_* entrypoints keep nn.LayerNorm's 1e-5.
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            **kwargs,
        )
        self.trunk_dim = embed_dim
        self.embed_dim = neck_chans

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """x [B, C, h, w] -> [B, 0]: the empty summary (``summary_dim`` 0)."""
        return x.flatten(1)[:, :0]


def is_segment_anything_layout(state_dict: StateDict) -> bool:
    """An original SAM checkpoint (``sam_vit_*.pth``: ``image_encoder.*`` beside ``prompt_encoder.*`` and
    ``mask_decoder.*``) or a bare ``ImageEncoderViT`` state dict (MLPs named ``lin1``/``lin2``)."""
    return f"{_ENCODER}patch_embed.proj.weight" in state_dict or "blocks.0.mlp.lin1.weight" in state_dict


def _resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """[L, head_dim] -> [length, head_dim], linear, as timm's ``get_rel_pos`` does at run time."""
    table = rel_pos.float().reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1)
    table = F.interpolate(table, size=length, mode="linear")
    return table.reshape(-1, length).permute(1, 0).to(rel_pos.dtype)


def segment_anything_to_timm(state_dict: StateDict, model: nn.Module, report: LoadReport) -> StateDict:
    """A SAM checkpoint (original, bare ``ImageEncoderViT`` or timm samvit layout) -> ``model``'s samvit keys.

    Original layout: keys outside ``image_encoder.`` (prompt encoder, mask decoder) go to ``report.dropped``,
    then timm's ``checkpoint_filter_fn`` strips the prefix and renames ``mlp.lin1/lin2`` to ``mlp.fc1/fc2``.
    When ``model`` was built for another input size, the position grid [1, g, g, C] and the global blocks'
    relative position tables [2g - 1, head_dim] are resampled to its sizes with the interpolations timm's
    forward applies, so the model computes what the checkpoint's native model computes at that size.
    """
    if is_segment_anything_layout(state_dict):
        if f"{_ENCODER}patch_embed.proj.weight" not in state_dict:
            state_dict = {_ENCODER + k: v for k, v in state_dict.items()}  # bare ImageEncoderViT
        for k in state_dict:
            if not k.startswith(_ENCODER):
                part = next((p for p in _NOT_ENCODER if k.startswith(p)), None)
                report.dropped[k] = _NOT_ENCODER[part] if part else "not part of SAM's image encoder"
        state_dict = checkpoint_filter_fn(state_dict, model)
    out = dict(state_dict)
    expected = model.state_dict()
    pos, target = out.get("pos_embed"), expected.get("pos_embed")
    # Only a grid of the model's width is resampled; any other shape is left for the comparison to report.
    if pos is not None and target is not None and pos.dim() == 4 and pos.shape[-1] == target.shape[-1]:
        if pos.shape != target.shape:
            out["pos_embed"] = resample_abs_pos_embed_nhwc(pos, list(target.shape[1:3]))
            report.notes.append(
                f"position grid resampled from {pos.shape[1]}x{pos.shape[2]} to {target.shape[1]}x{target.shape[2]}"
            )
    resized = 0
    for k, v in state_dict.items():
        if (
            _REL_POS.search(k)
            and k in expected
            and v.shape != expected[k].shape
            and v.shape[1:] == expected[k].shape[1:]
        ):
            out[k] = _resize_rel_pos(v, expected[k].shape[0])
            resized += 1
    if resized:
        report.notes.append(f"{resized} relative position tables of global-attention blocks resampled")
    return out
