"""Worker-side image work: one random crop region per sample, decoded once, emitted as uint8 at S x S.

Colour JPEGs are decoded by libjpeg-turbo (``simplejpeg``), which is faster than PIL's decoder; when the
crop needs at most half the image's resolution they are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(the scale ``Image.draft`` would pick), which is where most of the decode time goes for large photos. Other
images (PNG, WebP, grayscale or CMYK JPEGs, anything libjpeg-turbo refuses) are decoded by PIL. The crop
region is then resized by torch's antialiased bilinear kernel for uint8 channels-last images, several times
faster than PIL's resize.

With ``dataset.decode_on_device`` the colour JPEGs are only planned here (header, filters on the native size,
crop box and flip from the slot's rng): ``decode_crop_or_defer_jpeg`` hands their bytes on, and the training
device decodes them (``data/device_decode.py``).
"""

import io
import math
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
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


# JPEG colour spaces libjpeg-turbo converts to RGB as PIL does; Gray, CMYK and YCCK JPEGs are left to PIL.
_TURBO_COLORSPACES = ("YCbCr", "RGB")


def decode_crop(
    data: bytes, rng: random.Random, out_size: int, settings: CropSettings, out: Optional[torch.Tensor] = None
) -> np.ndarray:
    """Image bytes -> uint8 [out_size, out_size, 3] crop. Raises ``SampleDropped`` with the reason.

    The crop region and flip come from ``rng``; filters see the native size and the decoded pixels. With
    ``out`` (uint8 [out_size, out_size, 3], e.g. a row of a chunk's tensor) the crop is written there and
    the returned array shares its memory.
    """
    return _decode_planned(data, plan_crop(data, rng, settings), out_size, settings, out)


@dataclass(frozen=True)
class CropPlan:
    """What the header and the slot's rng decide before any pixel is decoded. ``box``: (left, top, right,
    bottom) in native pixels; ``image``: PIL's lazy image for bytes that are not for libjpeg-turbo."""

    width: int
    height: int
    box: Tuple[float, float, float, float]
    flip: bool
    image: Optional[Image.Image] = None

    @property
    def for_turbo(self) -> bool:
        return self.image is None


def plan_crop(data: bytes, rng: random.Random, settings: CropSettings) -> CropPlan:
    """Native size (header only), the native-resolution filter, then the crop box and flip drawn from ``rng``
    in that order; raises ``SampleDropped`` like ``decode_crop``."""
    if not data:
        raise SampleDropped("error/empty_member")
    size = _turbo_jpeg_size(data)
    image = _open_pil(data) if size is None else None
    width, height = size if size is not None else image.size
    reason = native_resolution_drop(width, height, settings.native_filter)
    if reason:
        raise SampleDropped(reason, f"native size {width}x{height}")
    box = random_crop_box(rng, width, height, settings.scale, settings.ratio)
    flip = rng.random() < settings.hflip_probability
    return CropPlan(width, height, box, flip, image)


def decode_crop_or_defer_jpeg(
    data: bytes, rng: random.Random, out_size: int, settings: CropSettings, out: torch.Tensor
) -> Optional[CropPlan]:
    """``decode_crop`` for ``dataset.decode_on_device``: a colour JPEG that ends with its EOI marker is not
    decoded here; its plan (box and flip from ``rng`` exactly as ``decode_crop`` draws them) is returned, and
    the training device decodes it (``data/device_decode.py``). Anything else is decoded into ``out`` as
    ``decode_crop`` does (returns None), so a truncated JPEG is dropped here as on the CPU path. The
    caller makes sure ``settings.near_constant_std`` is None: that filter needs the pixels (``loader.py``)."""
    plan = plan_crop(data, rng, settings)
    if plan.for_turbo and _ends_with_eoi(data):
        return plan
    _decode_planned(data, plan, out_size, settings, out)
    return None


def decode_with_pil(data: bytes) -> np.ndarray:
    """PIL's full-size decode -> uint8 [H, W, 3]; undecodable bytes raise ``SampleDropped`` (error/...)."""
    return _decode_pil(_open_pil(data), 1)


def _decode_planned(
    data: bytes, plan: CropPlan, out_size: int, settings: CropSettings, out: Optional[torch.Tensor]
) -> np.ndarray:
    width, height, box = plan.width, plan.height, plan.box
    reduction = _jpeg_reduction(width, height, box, out_size)
    pixels = _decode_turbo(data, width, height, reduction) if plan.for_turbo else None
    if pixels is None:  # not for libjpeg-turbo, or refused by it: PIL decides whether the bytes are usable
        pixels = _decode_pil(plan.image if plan.image is not None else _open_pil(data), reduction)
    if settings.near_constant_std is not None and is_near_constant(pixels, settings.near_constant_std):
        raise SampleDropped("dropped/near_constant")
    factor_x, factor_y = pixels.shape[1] / width, pixels.shape[0] / height
    scaled_box = (box[0] * factor_x, box[1] * factor_y, box[2] * factor_x, box[3] * factor_y)
    crop = _resize_region(pixels, scaled_box, out_size)
    if plan.flip:
        crop = crop.flip(1)
    if out is None:
        return crop.contiguous().numpy()
    out.copy_(crop)
    return out.numpy()


# A complete JPEG ends with EOI (FF D9); some writers append a few padding bytes after it. Inside the
# entropy-coded data an FF byte is always followed by 00 or a restart marker, so FF D9 near the end is EOI.
_EOI_SEARCH_BYTES = 32


def _ends_with_eoi(data: bytes) -> bool:
    """True when the bytes end with the EOI marker (within the last 32 bytes): not visibly truncated."""
    return data.find(b"\xff\xd9", max(0, len(data) - _EOI_SEARCH_BYTES)) != -1


def _turbo_jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` of a JPEG that libjpeg-turbo decodes to RGB, from its header; None for others."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if colorspace in _TURBO_COLORSPACES else None


def _jpeg_reduction(width: int, height: int, box: Tuple[float, float, float, float], out_size: int) -> int:
    """The JPEG decode scale 1/r, r in 1, 2, 4, 8, that keeps >= ``out_size`` pixels per side of the crop ``box``.

    The scale ``Image.draft`` picks for the smallest size at which the crop keeps those pixels (1 when the
    crop needs more than half the native resolution).
    """
    need = max(out_size / (box[2] - box[0]), out_size / (box[3] - box[1]))
    if need >= 0.5:
        return 1
    room = min(width // math.ceil(width * need), height // math.ceil(height * need))
    return next(reduction for reduction in (8, 4, 2, 1) if room >= reduction)


def _decode_turbo(data: bytes, width: int, height: int, reduction: int) -> Optional[np.ndarray]:
    """libjpeg-turbo decode at scale 1/``reduction`` -> uint8 [ceil(height/r), ceil(width/r), 3]; None if refused.

    Accurate integer DCT (as PIL); fast chroma upsampling (pixel replication instead of PIL's triangle filter):
    ~12 % less decode time for 4:2:0 JPEGs, it changes only colour detail finer than 2 px, which the resize to
    the crop's size mostly averages away (~0.5 uint8 levels mean abs difference on the crop; the fast DCT
    would cost ~0.9 levels in luma too for ~8 %, and is not used). ``strict``: a JPEG with a recoverable error
    (truncated data, corrupt segments) is refused here and goes to PIL, which decides as before.
    """
    try:
        return simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            fastupsample=True,
            min_height=math.ceil(height / reduction),
            min_width=math.ceil(width / reduction),
            min_factor=reduction,
            strict=True,
        )
    except ValueError:
        return None


def _open_pil(data: bytes) -> Image.Image:
    """PIL's lazy image (header read, pixels not yet decoded); undecodable bytes -> ``error/corrupt_image``."""
    try:
        return Image.open(io.BytesIO(data))
    except Exception as error:  # PIL raises many types for undecodable bytes
        raise SampleDropped("error/corrupt_image", f"{type(error).__name__}: {error}")


def _decode_pil(image: Image.Image, reduction: int) -> np.ndarray:
    """PIL decode -> uint8 [H', W', 3]; JPEGs at scale 1/``reduction`` (``Image.draft``), others at full size."""
    try:
        if image.format == "JPEG" and reduction > 1:
            image.draft("RGB", (image.width // reduction, image.height // reduction))  # picks exactly 1/reduction
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.array(image)
    except Exception as error:
        raise SampleDropped("error/corrupt_image", f"{type(error).__name__}: {error}")


def _resize_region(pixels: np.ndarray, box: Tuple[float, float, float, float], out_size: int) -> torch.Tensor:
    """Region ``box`` (left, top, right, bottom) of uint8 [H, W, 3] ``pixels`` -> uint8 [out_size, out_size, 3].

    Bilinear, antialiased when downscaling (PIL's ``resize(..., BILINEAR, box=...)`` filter, torch's uint8
    kernel); the box is rounded to whole pixels (< 0.5 px shift per edge). Filter taps stop at the box edges,
    where PIL also reads the pixels just outside it. Returns an HWC view of a new channels-last tensor.
    """
    height, width = pixels.shape[:2]
    left, right = pixel_span(box[0], box[2], width)
    top, bottom = pixel_span(box[1], box[3], height)
    region = torch.from_numpy(pixels)[top:bottom, left:right].permute(2, 0, 1).unsqueeze(0)
    region = region.contiguous(memory_format=torch.channels_last)  # the layout the fast uint8 kernel takes
    resized = F.interpolate(region, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0)


def pixel_span(start: float, stop: float, length: int) -> Tuple[int, int]:
    """``[start, stop)`` in pixels rounded to whole pixels within ``[0, length)``, at least one pixel long."""
    first = min(max(int(round(start)), 0), length - 1)
    return first, min(max(int(round(stop)), first + 1), length)
