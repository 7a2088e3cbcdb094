"""``FeatSharpAdaptor``: a frozen FeatSharp upsampler wrapped around a teacher's forward.

teacher(x) -> PHI-S normaliser -> learned bias map -> optional conditional-bias block (a timm ViT block, 16
heads, over the map's tokens) = the "low-res features" FeatSharp works on; its output is mapped back to the
teacher's space with the inverse normaliser. The adaptor's own math runs in float32 whatever dtype the teacher
returns.
"""

from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from radio.models.featsharp.upsampler import FeatSharpUpsampler, assemble_tiles, tile_inputs

Featurizer = Callable[[torch.Tensor], Tuple[Optional[torch.Tensor], torch.Tensor]]

NORMALIZERS = ("phi-s", "phi-s-noalpha", "phi-s-onlyalpha", "none", "identity")


class PhiStandardize(nn.Module):
    """PHI-S: x -> alpha · rotation @ (x - mean), per pixel; ``denormalize`` inverts it with ``inv_rotation``.

    Buffers (all four always present): mean [C], alpha [], rotation [C, C], inv_rotation [C, C].
    ``phi-s-noalpha`` skips alpha, ``phi-s-onlyalpha`` skips the rotation, ``none`` / ``identity``: no buffers.
    """

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.enabled = mode not in ("none", "identity")
        self.rotate = mode in ("phi-s", "phi-s-noalpha")
        self.scale = mode in ("phi-s", "phi-s-onlyalpha")
        if self.enabled:
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("alpha", torch.tensor(1.0))
            self.register_buffer("rotation", torch.eye(dim))
            self.register_buffer("inv_rotation", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, h, w] -> [B, C, h, w]."""
        if not self.enabled:
            return x
        x = x - self.mean.reshape(1, -1, 1, 1)
        if self.rotate:
            kernel = self.rotation * self.alpha if self.scale else self.rotation
            return F.conv2d(x, kernel[:, :, None, None])
        return x * self.alpha

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.rotate:
            kernel = self.inv_rotation / self.alpha if self.scale else self.inv_rotation
            return F.conv2d(x, kernel[:, :, None, None], bias=self.mean)
        return x / self.alpha + self.mean.reshape(1, -1, 1, 1)

    def macs(self, pixels: int) -> int:
        return pixels * self.mean.numel() ** 2 if self.enabled and self.rotate else 0


class BiasBuffer(nn.Module):
    """x + buffer [1, C, h, w] (bilinearly resized when x's grid differs)."""

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.buffer = nn.Parameter(torch.zeros(1, dim, grid, grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buffer = self.buffer
        if buffer.shape[-2:] != x.shape[-2:]:
            buffer = F.interpolate(buffer, x.shape[-2:], mode="bilinear", align_corners=False)
        return x + buffer


def cond_bias_macs(block: nn.Module, tokens: int) -> int:
    """Multiply-accumulates of a timm ViT block over ``tokens`` tokens (global attention)."""
    dim = block.attn.qkv.in_features
    hidden = block.mlp.fc1.out_features
    return tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * tokens * tokens * dim


class FeatSharpAdaptor(nn.Module):
    """Frozen FeatSharp upsampler (or, without ``upsampler``, the de-biased teacher at its own grid).

    ``forward(images, featurizer)``: images [B, 3, R·input_factor, R·input_factor] already normalised for the
    teacher; ``featurizer(x [N, 3, R, R]) -> (summary [N, D] or None, spatial [N, C, h, h])`` in teacher space,
    h = R / patch. Returns (summary of the full-image pass, spatial [B, C, h·upsample_factor, ...] float32 in
    teacher space). The teacher is called once per batch, on B·(1 + f²) crops when upsampling.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        input_size: int,
        patch_size: int,
        normalizer: PhiStandardize,
        bias_buffer: Optional[BiasBuffer] = None,
        cond_bias: Optional[nn.Module] = None,
        upsampler: Optional[FeatSharpUpsampler] = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_size = input_size
        self.grid = input_size // patch_size
        self.normalizer = normalizer
        self.bias_buffer = bias_buffer
        self.cond_bias_transform = cond_bias
        self.upsampler = upsampler

    @property
    def upsample_factor(self) -> int:
        return self.upsampler.factor if self.upsampler is not None else 1

    @property
    def input_factor(self) -> int:
        """The image side it takes, in units of R (FeatSharp's guidance is the image at R·f)."""
        return self.upsample_factor

    def teacher_forwards_per_image(self) -> int:
        """Teacher forwards at R px per image: 1 + f² with the upsampler (full image + tiles), else 1."""
        return 1 + self.upsample_factor**2 if self.upsampler is not None else 1

    def low_res_features(self, x: torch.Tensor, featurizer: Featurizer) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """x [N, 3, R, R] -> (summary or None, [N, C, h, h] float32 in normalised space, bias added)."""
        summary, spatial = featurizer(x)
        if spatial.shape[1:] != (self.embed_dim, self.grid, self.grid):
            raise ValueError(
                f"featurizer returned spatial features {list(spatial.shape)}; FeatSharp expects "
                f"[N, {self.embed_dim}, {self.grid}, {self.grid}]"
            )
        feats = self.normalizer(spatial.float())
        if self.bias_buffer is not None:
            feats = self.bias_buffer(feats)
        if self.cond_bias_transform is not None:
            n, c, h, w = feats.shape
            tokens = self.cond_bias_transform(feats.flatten(2).transpose(1, 2))
            feats = tokens.transpose(1, 2).reshape(n, c, h, w)
        return summary, feats

    def forward(self, images: torch.Tensor, featurizer: Featurizer) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        b = images.shape[0]
        guidance = images.float()
        if self.upsampler is None:
            x = F.interpolate(guidance, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
            summary, out = self.low_res_features(x.to(images.dtype), featurizer)
        else:
            crops = tile_inputs(guidance, self.input_size, self.upsample_factor)
            summary, feats = self.low_res_features(crops.to(images.dtype), featurizer)
            tiles = assemble_tiles(feats[b:], self.upsample_factor)
            out = self.upsampler(guidance, feats[:b], tiles)
            summary = summary[:b] if summary is not None else None
        return summary, self.normalizer.denormalize(out)

    def flops_per_image(self) -> int:
        """The adaptor's own FLOPs (2 · multiply-accumulates of its matrix products and convolutions; elementwise
        ops, norms and softmax excluded) per image, teacher forwards excluded (see ``teacher_forwards_per_image``)."""
        maps = self.teacher_forwards_per_image()
        lr_pixels = self.grid * self.grid
        out_pixels = lr_pixels * self.upsample_factor**2
        macs = self.normalizer.macs(maps * lr_pixels) + self.normalizer.macs(out_pixels)
        if self.cond_bias_transform is not None:
            macs += maps * cond_bias_macs(self.cond_bias_transform, lr_pixels)
        if self.upsampler is not None:
            macs += self.upsampler.ups[0].macs(self.input_size * self.input_factor)
        return 2 * macs
