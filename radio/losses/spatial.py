"""Spatial grid matching: bring student and teacher feature maps onto one grid.

Teachers run at their own resolution and patch size, so their token grid rarely equals the student's.
Both maps are resized bilinearly (antialiased, so downsampling averages instead of aliasing) to the
smaller of the two grids.
"""

from typing import Tuple

import torch
import torch.nn.functional as F


def resize_grid(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of x [B, C, h, w] to ``size``; returned unchanged when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def match_grids(pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Resize pred [B, C, hp, wp] and target [B, C, ht, wt] onto one grid (h, w).

    The grid is whichever of the two has fewer tokens (the teacher's on a tie).
    Returns (pred [B, C, h, w], target [B, C, h, w]).
    """
    if pred.dim() != 4 or target.dim() != 4:
        raise ValueError(f"spatial features must be [B,C,h,w]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"student and teacher spatial features differ in batch or channels: {tuple(pred.shape)} vs "
            f"{tuple(target.shape)} (the head's output size must equal the teacher's channels)"
        )
    hp, wp = pred.shape[-2:]
    ht, wt = target.shape[-2:]
    size = (hp, wp) if hp * wp < ht * wt else (ht, wt)
    return resize_grid(pred, size), resize_grid(target, size)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B·h·w, C] rows, one per token."""
    return x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])
