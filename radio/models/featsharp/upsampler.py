"""FeatSharp's upsampler (NVlabs/FeatSharp, ``featsharp.<flags>``): tiles + guided upsampling + a refine block.

The guidance image is resized to the teacher's resolution R (level 0) and to R·f, which is cut into f x f tiles
of R px. The teacher sees all 1 + f² crops in one batch; the tile features reassembled form a (h·f) x (h·f) map.
One ``AttentionLevel`` concatenates its inputs along channels (``jbu``: FeatUp JBU upsampling of the level-0
features; ``bilinear``; ``tiles``: the tile map plus a learned per-tile embedding; ``jafar``) and refines them with
a local-attention block down to C channels. Everything here is in the normaliser's (PHI-S) space.
"""

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from radio.models.featsharp.attention import RefineBlock
from radio.models.featsharp.jafar import JafarUpsampler
from radio.models.featsharp.jbu import JBUStack

INPUTS = ("jbu", "tiles", "bilinear", "jafar")
DEFAULT_INPUTS = ("jbu", "tiles")
DEFAULT_WINDOW = 7


def tile_inputs(images: torch.Tensor, resolution: int, factor: int) -> torch.Tensor:
    """images [B, 3, H, W] -> [B + B·f², 3, R, R]: the image at R, then per image its f x f tiles of the image
    at R·f, row-major (tile (i, j) of image b at B + b·f² + i·f + j)."""
    b = images.shape[0]
    low = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=False)
    side = resolution * factor
    high = F.interpolate(images, (side, side), mode="bilinear", align_corners=False)
    tiles = high.reshape(b, 3, factor, resolution, factor, resolution).permute(0, 2, 4, 1, 3, 5)
    return torch.cat([low, tiles.reshape(b * factor * factor, 3, resolution, resolution)])


def assemble_tiles(features: torch.Tensor, factor: int) -> torch.Tensor:
    """[B·f², C, h, w] (row-major tiles per image) -> [B, C, h·f, w·f], tile (i, j) at block (i, j)."""
    n, c, h, w = features.shape
    grid = features.reshape(n // (factor * factor), factor, factor, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(-1, c, factor * h, factor * w)


class AttentionLevel(nn.Module):
    """guidance [B, 3, R·f, R·f], low-res [B, C, h, h], tiles [B, C, h·f, h·f] -> [B, C, h·f, h·f]."""

    def __init__(
        self, feat_dim: int, grid: int, factor: int, inputs: Sequence[str], window: int, layer_norm: bool
    ) -> None:
        super().__init__()
        self.inputs: List[str] = list(inputs)
        self.grid = grid
        self.side = grid * factor
        self.feat_dim = feat_dim
        if "tiles" in self.inputs:
            self.tile_pos = nn.Parameter(torch.zeros(1, feat_dim, factor, factor))
        if "jbu" in self.inputs:
            self.jbu = JBUStack(factor)
        if "jafar" in self.inputs:
            self.jafar = JafarUpsampler(feat_dim, factor)
        self.block = RefineBlock(feat_dim * len(self.inputs), feat_dim, self.side, window, layer_norm)

    def _input(self, name: str, guidance: torch.Tensor, low_res: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        side = (self.side, self.side)
        if name == "jbu":
            return self.jbu(low_res, F.interpolate(guidance, side, mode="bilinear", align_corners=False))
        if name == "bilinear":
            return F.interpolate(low_res, side, mode="bilinear", align_corners=False)
        if name == "tiles":
            pos = self.tile_pos.repeat_interleave(self.grid, dim=2).repeat_interleave(self.grid, dim=3)
            return tiles + pos
        return self.jafar(low_res, guidance)

    def forward(self, guidance: torch.Tensor, low_res: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self._input(name, guidance, low_res, tiles) for name in self.inputs], dim=1)
        b, _, h, w = x.shape
        y = self.block(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, self.feat_dim, h, w)

    def macs(self, guidance_side: int) -> int:
        total = self.block.macs(self.side * self.side)
        if "jbu" in self.inputs:
            total += self.jbu.macs(self.feat_dim, self.grid)
        if "jafar" in self.inputs:
            total += self.jafar.macs(self.feat_dim, self.grid, guidance_side)
        return total


class FeatSharpUpsampler(nn.Module):
    """The ``upsampler.*`` module of a FeatSharp checkpoint (one level, ``ups.0``)."""

    def __init__(
        self,
        feat_dim: int,
        grid: int,
        factor: int,
        inputs: Sequence[str] = DEFAULT_INPUTS,
        window: int = DEFAULT_WINDOW,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.factor = factor
        self.ups = nn.ModuleList([AttentionLevel(feat_dim, grid, factor, inputs, window, layer_norm)])

    def forward(self, guidance: torch.Tensor, low_res: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        return self.ups[0](guidance, low_res, tiles)
