"""Spatial grid matching: bring student and teacher feature maps (and the valid mask) onto one grid.

Teachers run at their own resolution and patch size, so their token grid rarely equals the student's.
Both maps are resized bilinearly (antialiased, so downsampling averages instead of aliasing) to the
smaller of the two grids, or to a configured target grid.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

GridSize = Union[int, Sequence[int]]

# A resized mask value is a coverage fraction; a token counts only if valid tokens cover all of it
# (up to float round-off), so masked-out content never leaks into the loss.
_FULLY_VALID = 1.0 - 1e-3


def _as_hw(size: GridSize) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_grid(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of x [B, C, h, w] to ``size``; returned unchanged when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_mask(valid_mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """valid_mask [B, h, w] or [B, 1, h, w] (bool or 0/1) -> bool [B, *size].

    On a different grid a token is valid only if it is entirely covered by valid tokens.
    """
    mask = valid_mask if valid_mask.dim() == 4 else valid_mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"valid_mask must be [B,h,w] or [B,1,h,w], got {tuple(valid_mask.shape)}")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask[:, 0].bool()
    coverage = resize_grid(mask.float(), size)
    return coverage[:, 0] >= _FULLY_VALID


def match_grids(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid_mask: Optional[torch.Tensor] = None,
    target_size: Optional[GridSize] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Resize pred [B, C, hp, wp] and target [B, C, ht, wt] onto one grid (h, w).

    The grid is ``target_size`` when given, else whichever of the two grids has fewer tokens (the
    teacher's on a tie). valid_mask ([B, h', w'] or [B, 1, h', w'], any grid) is resized with them.
    Returns (pred [B, C, h, w], target [B, C, h, w], mask bool [B, h, w] or None).
    """
    if pred.dim() != 4 or target.dim() != 4:
        raise ValueError(f"spatial features must be [B,C,h,w]; got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"student and teacher spatial features differ in batch or channels: {tuple(pred.shape)} vs "
            f"{tuple(target.shape)} (the head's output size must equal the teacher's channels)"
        )
    if target_size is not None:
        size = _as_hw(target_size)
    else:
        hp, wp = pred.shape[-2:]
        ht, wt = target.shape[-2:]
        size = (hp, wp) if hp * wp < ht * wt else (ht, wt)
    mask = None if valid_mask is None else resize_mask(valid_mask, size)
    return resize_grid(pred, size), resize_grid(target, size), mask


def tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B·h·w, C] rows, one per token."""
    return x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])
