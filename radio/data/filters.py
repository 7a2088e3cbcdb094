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
    """True when every channel's pixel standard deviation (0-255 scale, measured on a 64x64
    nearest-neighbour sample so the cost does not grow with the image) is below ``max_std``."""
    sample = np.asarray(image.resize((64, 64), Image.NEAREST), dtype=np.float32).reshape(-1, 3)
    return float(sample.std(axis=0).max()) < max_std
