"""DINOv2 without registers, with the original's position-grid interpolation.

timm resamples a ViT's position grid with antialiasing, at load (to the build size) and again at every
other input size. The original DINOv2 and HF ``Dinov2Model`` keep the native grid (518 px / 14 = 37x37)
and resample it at every forward to the input's grid, bicubic *without* antialiasing: at 224 px the two
differ by 3.4% of the largest feature value. ``Dinov2VisionTransformer`` computes what the original does.
(DINOv2 *with* registers antialiases in HF too, which is what timm does: those entries stay plain timm.)
"""

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import (
    VisionTransformer,
    checkpoint_filter_fn,  # noqa: F401  (formats.py finds it by module)
)


class Dinov2VisionTransformer(VisionTransformer):
    """timm's DINOv2 ViT (built at its native size) whose position grid follows the input like DINOv2's."""

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: patch tokens [B, H, W, C] -> [B, 1 + H*W, C] with the CLS token and position embeddings added."""
        b, h, w, c = x.shape
        grid_h, grid_w = self.patch_embed.grid_size
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (h, w) != (grid_h, grid_w):
            grid = patch_pos.reshape(1, grid_h, grid_w, c).permute(0, 3, 1, 2)
            # float32, as the original: bicubic resampling in bf16 shifts the embeddings.
            grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
            patch_pos = grid.to(patch_pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, c)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)], dim=1)
        return self.pos_drop(tokens + torch.cat([cls_pos, patch_pos], dim=1))


def with_dinov2_interpolation(model: VisionTransformer) -> Dinov2VisionTransformer:
    """The timm DINOv2 ``model`` (built by its timm entrypoint at the native size), resampling like DINOv2.

    Only ``_pos_embed`` differs, so the class is switched in place: parameters, names and timm's DINOv2
    checkpoint conversion stay exactly timm's.
    """
    if model.reg_token is not None or model.no_embed_class:
        raise ValueError("with_dinov2_interpolation is for DINOv2 without registers (class token in the grid)")
    model.__class__ = Dinov2VisionTransformer
    return model
