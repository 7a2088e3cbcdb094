"""Mosaic teacher inputs: k x k samples tiled into one image, and the teacher's map cut back per sample.

A high-resolution teacher (SAM at 1024 px) next to a low-resolution student spends most of a step's FLOPs
upsampling small crops to its input size. With ``mosaic: k`` each sample's view is made at
``input_size / k`` and k² consecutive samples share one teacher input, so the teacher runs k² times fewer
images while still seeing its native resolution (RADIOv2.5, arXiv 2412.07679, "mosaic augmentation";
docs/resolutions.md). Tile (i, j) of mosaic m holds sample ``m·k² + i·k + j``; a batch that does not fill
its last mosaic is padded with zero tiles whose features are dropped.
"""

import torch


def mosaic_pack(views: torch.Tensor, k: int) -> torch.Tensor:
    """views [B, 3, s, s] -> [ceil(B / k²), 3, k·s, k·s]."""
    if k == 1:
        return views
    b, c, h, w = views.shape
    per = k * k
    pad = -b % per
    if pad:
        views = torch.cat([views, views.new_zeros(pad, c, h, w)])
    m = views.shape[0] // per
    return views.view(m, k, k, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(m, c, k * h, k * w)


def mosaic_unpack(features: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """A teacher's map of the mosaics [M, C, k·h, k·w] -> per-sample maps [batch, C, h, w]."""
    if k == 1:
        return features
    m, c, kh, kw = features.shape
    if kh % k or kw % k:
        raise ValueError(f"mosaic {k}x{k}: a feature map of {kh}x{kw} tokens does not split into {k}x{k} tiles")
    h, w = kh // k, kw // k
    tiles = features.view(m, c, k, h, k, w).permute(0, 2, 4, 1, 3, 5).reshape(m * k * k, c, h, w)
    return tiles[:batch]
