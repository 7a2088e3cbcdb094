"""ViTDet windowed-attention augmentation for the student.

On a step that draws a window size (``choose_window``), the windowed blocks attend only inside
non-overlapping windows of ``window x window`` patch tokens; the prefix tokens (CLS slots, registers) are
copied into every window and averaged back afterwards. The remaining blocks stay global.
"""

import random
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def choose_window(vitdet_cfg, step: int, seed: int) -> Optional[int]:
    """Window size (tokens) for this global step, or None for global attention everywhere.

    ``vitdet_cfg``: a ``VitDetConfig`` (``prob``, ``window_sizes``). A pure function of (seed, step), so
    every rank draws the same answer without communicating.
    """
    if vitdet_cfg.prob <= 0 or not vitdet_cfg.window_sizes:
        return None
    rng = random.Random(f"vitdet/{seed}/{step}")
    if rng.random() >= vitdet_cfg.prob:
        return None
    return int(rng.choice(list(vitdet_cfg.window_sizes)))


def windowed_block_mask(depth: int, num_global: int, num_windowed: Optional[int]) -> List[bool]:
    """Which of ``depth`` blocks are windowed.

    ``num_global`` global blocks are spread evenly with the last block always global (ViTDet's layout);
    ``num_windowed`` (None: all the others) of the remaining blocks, the earliest first, are windowed.
    """
    num_global = max(1, min(num_global, depth))
    global_idx = {round((i + 1) * depth / num_global) - 1 for i in range(num_global)}
    candidates = [i for i in range(depth) if i not in global_idx]
    if num_windowed is not None:
        candidates = candidates[: max(0, num_windowed)]
    chosen = set(candidates)
    return [i in chosen for i in range(depth)]


def window_attention_block(
    block: nn.Module, tokens: torch.Tensor, num_prefix: int, h: int, w: int, window: int
) -> torch.Tensor:
    """Run a timm ``Block`` with attention restricted to ``window x window`` token windows.

    tokens [B, P + h*w, C] -> same shape. The grid is zero-padded up to a multiple of the window; padded
    positions are masked out as keys so they never change real tokens, and are cropped afterwards.
    """
    b, _, c = tokens.shape
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    pad_h, pad_w = -h % window, -w % window
    grid = F.pad(patches.reshape(b, h, w, c), (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // window, (w + pad_w) // window
    num_windows = nh * nw
    windows = grid.reshape(b, nh, window, nw, window, c).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(b * num_windows, window * window, c)
    seq = torch.cat([prefix.repeat_interleave(num_windows, dim=0), windows], dim=1)

    attn_mask = None
    if pad_h or pad_w:
        valid = F.pad(torch.ones(h, w, dtype=torch.bool, device=tokens.device), (0, pad_w, 0, pad_h))
        valid = valid.reshape(nh, window, nw, window).permute(0, 2, 1, 3).reshape(num_windows, window * window)
        valid = torch.cat([valid.new_ones(num_windows, num_prefix), valid], dim=1).repeat(b, 1)
        attn_mask = torch.zeros(valid.shape, dtype=tokens.dtype, device=tokens.device)
        attn_mask = attn_mask.masked_fill(~valid, float("-inf"))[:, None, None, :]

    out = block(seq, attn_mask=attn_mask)
    prefix = out[:, :num_prefix].reshape(b, num_windows, num_prefix, c).mean(dim=1)
    patches = out[:, num_prefix:].reshape(b, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, nh * window, nw * window, c)[:, :h, :w].reshape(b, h * w, c)
    return torch.cat([prefix, patches], dim=1)
