"""Position grids resampled the way the reference implementation does it, at every input size.

timm resamples a ViT's position grid with antialiasing, once at load (to the size the model is built for)
and again at every other input size: two resamplings, and a filter the originals do not apply. DINOv2 and
HF ``Dinov2Model``, HF CLIP and SigLIP keep the grid they were trained with and resample it once, at every
forward, to the input's grid — bicubic without antialiasing (HF ``Dinov2WithRegistersModel`` with it). At
224 px a DINOv2 teacher built the timm way differs by 3.4% of the largest feature value.
``ReferenceGridViT`` computes what the reference does; the registry entries that use it say which filter.
"""

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import (
    VisionTransformer,
    checkpoint_filter_fn,  # noqa: F401  (formats.py finds it by module)
)


class ReferenceGridViT(VisionTransformer):
    """A timm ViT built at its native size whose position grid follows the input like its reference's."""

    grid_antialias = False

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: patch tokens [B, H, W, C] -> prefix tokens + patch tokens [B, P + H*W, C], positions added."""
        b, h, w, c = x.shape
        in_grid = 0 if self.no_embed_class else self.num_prefix_tokens  # prefix rows stored in pos_embed
        prefix_pos, patch_pos = self.pos_embed[:, :in_grid], self.pos_embed[:, in_grid:]
        grid_h, grid_w = self.patch_embed.grid_size
        if (h, w) != (grid_h, grid_w):
            grid = patch_pos.reshape(1, grid_h, grid_w, c).permute(0, 3, 1, 2)
            # float32: bicubic resampling in bf16 shifts the embeddings.
            grid = F.interpolate(
                grid.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=self.grid_antialias
            )
            patch_pos = grid.to(patch_pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, c)
        prefix = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        x = x.reshape(b, h * w, c)
        if self.no_embed_class:  # positions on the patch tokens only
            return self.pos_drop(torch.cat(prefix + [x + patch_pos], dim=1))
        return self.pos_drop(torch.cat(prefix + [x], dim=1) + torch.cat([prefix_pos, patch_pos], dim=1))


def with_reference_grid(model: VisionTransformer, *, antialias: bool) -> ReferenceGridViT:
    """``model`` (built by its timm entrypoint at the native size), resampling its grid like the reference.

    Only ``_pos_embed`` differs, so the class is switched in place: parameters, names and timm's checkpoint
    conversion stay exactly timm's.
    """
    model.__class__ = ReferenceGridViT
    model.grid_antialias = antialias
    return model
