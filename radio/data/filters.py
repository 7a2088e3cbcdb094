"""Sample filters on the decoded native image, applied before any resize."""

from typing import Optional

import numpy as np
from PIL import Image

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


def is_near_constant(image: Image.Image, max_std: float) -> bool:
    """True when every channel's pixel standard deviation (0-255 scale, measured on a 32x32
    nearest-neighbour sample so the cost does not grow with the image) is below ``max_std``."""
    pixels = np.asarray(image.resize((32, 32), Image.NEAREST)).reshape(-1, 3).astype(np.int64)
    count = pixels.shape[0]
    sums = pixels.sum(axis=0)
    # Integer sums: several times faster than ndarray.std on this hot path, and exact.
    variance = (np.einsum("ij,ij->j", pixels, pixels) - sums * sums / count) / count
    return float(variance.max()) < max_std * max_std
