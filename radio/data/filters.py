"""Sample filters on the decoded native image, applied before any resize."""

from typing import Optional

import numpy as np

from radio.config.schema import NativeResolutionFilter


def native_resolution_drop(width: int, height: int, limits: NativeResolutionFilter) -> Optional[str]:
    """Counter name (``dropped/<threshold>``) of the first threshold the native size fails, else None.

    Only thresholds that are set apply; there are no maximum sizes and no minimum aspect ratio.
    """
    short_side, long_side = min(width, height), max(width, height)
    if limits.min_short_side is not None and short_side < limits.min_short_side:
        return "dropped/min_short_side"
    if limits.min_long_side is not None and long_side < limits.min_long_side:
        return "dropped/min_long_side"
    if limits.min_area is not None and width * height < limits.min_area:
        return "dropped/min_area"
    if limits.max_aspect_ratio is not None and long_side > limits.max_aspect_ratio * max(short_side, 1):
        return "dropped/max_aspect_ratio"
    return None


NEAR_CONSTANT_SAMPLE = 32  # side of the nearest-neighbour sample the near-constant filter measures


def is_near_constant(pixels: np.ndarray, max_std: float) -> bool:
    """True when every channel's standard deviation (0-255 scale) of uint8 pixels [H, W, 3] is below ``max_std``,
    measured on a 32x32 nearest-neighbour sample (the pixel under each sample's centre, as PIL's NEAREST
    resize takes it), so the cost does not grow with the image."""
    height, width = pixels.shape[:2]
    centres = 2 * np.arange(NEAR_CONSTANT_SAMPLE) + 1
    rows, cols = centres * height // (2 * NEAR_CONSTANT_SAMPLE), centres * width // (2 * NEAR_CONSTANT_SAMPLE)
    sample = pixels.take(rows, axis=0).take(cols, axis=1).reshape(-1, 3).astype(np.int64)
    sums = sample.sum(axis=0)
    # Integer sums: several times faster than ndarray.std on this hot path, and exact.
    variance = (np.einsum("ij,ij->j", sample, sample) - sums * sums / sample.shape[0]) / sample.shape[0]
    return float(variance.max()) < max_std * max_std
