"""Worker-side image work: one random crop region per sample, decoded once, emitted as uint8 at S x S.

JPEGs much larger than the crop needs are decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``), which is
where most of the decode time goes for large photos.
"""

import io
import math
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from radio.config.schema import NativeResolutionFilter
from radio.data.filters import is_near_constant, native_resolution_drop


class SampleDropped(Exception):
    """The sample is not used; ``reason`` is its counter name (``dropped/...`` or ``error/...``)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class CropSettings:
    """Crop augmentation and filters (from ``dataset.augmentation`` and ``dataset.train_dataset``)."""

    scale: Tuple[float, float] = (0.35, 1.0)  # crop area as a fraction of the image area
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)  # crop width / height
    hflip_probability: float = 0.5
    native_filter: NativeResolutionFilter = field(default_factory=NativeResolutionFilter)
    near_constant_std: Optional[float] = 2.0  # None: keep near-constant images


def random_crop_box(
    rng: random.Random, width: int, height: int, scale: Sequence[float], ratio: Sequence[float]
) -> Tuple[float, float, float, float]:
    """Random-resized-crop region ``(left, top, right, bottom)`` in native pixels.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; after 10 misses, the
    largest centred crop whose aspect ratio is within ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = math.sqrt(target_area * aspect)
        crop_h = math.sqrt(target_area / aspect)
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = rng.uniform(0, width - crop_w)
            top = rng.uniform(0, height - crop_h)
            return left, top, left + crop_w, top + crop_h
    aspect = width / height
    if aspect < ratio[0]:
        crop_w, crop_h = width, width / ratio[0]
    elif aspect > ratio[1]:
        crop_w, crop_h = height * ratio[1], height
    else:
        crop_w, crop_h = width, height
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def decode_crop(data: bytes, rng: random.Random, out_size: int, settings: CropSettings) -> np.ndarray:
    """Image bytes -> uint8 [out_size, out_size, 3] crop. Raises ``SampleDropped`` with the reason.

    The crop region and flip come from ``rng``; filters see the native size and the decoded pixels.
    """
    if not data:
        raise SampleDropped("error/empty_member")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Exception as error:  # PIL raises many types for undecodable bytes
        raise SampleDropped("error/corrupt_image", f"{type(error).__name__}: {error}")
    reason = native_resolution_drop(width, height, settings.native_filter)
    if reason:
        raise SampleDropped(reason, f"native size {width}x{height}")
    box = random_crop_box(rng, width, height, settings.scale, settings.ratio)
    flip = rng.random() < settings.hflip_probability
    try:
        if image.format == "JPEG":
            # Ask for the smallest scale at which the crop still has >= out_size pixels per side.
            need = max(out_size / (box[2] - box[0]), out_size / (box[3] - box[1]))
            if need < 0.5:
                image.draft("RGB", (math.ceil(width * need), math.ceil(height * need)))
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as error:
        raise SampleDropped("error/corrupt_image", f"{type(error).__name__}: {error}")
    if settings.near_constant_std is not None and is_near_constant(image, settings.near_constant_std):
        raise SampleDropped("dropped/near_constant")
    factor_x, factor_y = image.size[0] / width, image.size[1] / height
    scaled_box = (box[0] * factor_x, box[1] * factor_y, box[2] * factor_x, box[3] * factor_y)
    crop = image.resize((out_size, out_size), Image.BILINEAR, box=scaled_box)
    if flip:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop)
