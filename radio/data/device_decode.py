"""A batch's colour-JPEG crops decoded on the training device (``dataset.decode_on_device``).

For nodes short of CPU cores per GPU. The DataLoader workers only read, check and plan the colour JPEGs
(``crops.decode_crop_or_defer_jpeg``: header, native-size filters, the slot's crop box and flip, drawn as
the CPU path draws them) and pass their bytes on; every other image is decoded there as before. Here all of
a batch's deferred JPEGs are decoded in one batched ``torchvision.io.decode_jpeg`` call on the device
(nvJPEG on CUDA), and each crop region is cut out (rounded to whole pixels as ``crops.pixel_span`` does),
resized to the batch's crop size (antialiased bilinear), flipped, and written into the batch's uint8 images
on that device. Which sample fills which slot, and its crop geometry, are the CPU path's; only the decoder
and the resampler differ (a few uint8 levels; docs/benchmarks.md).

A JPEG the device cannot decode is decoded by PIL in this process; when PIL cannot either, its slot holds
a neutral grey crop and counts as ``error/device_decode_failed``. The slot keeps its sample: giving it to
the next one, as the workers do with bad samples, would change what every later slot and a resume read.
"""

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from radio.data.crops import CropPlan, SampleDropped, decode_with_pil, pixel_span

if TYPE_CHECKING:
    from radio.data.loader import Batch

DEVICE_DECODE_FAILED = "error/device_decode_failed"
NEUTRAL_GREY = 128  # uint8 level of a crop whose JPEG no decoder could read


@dataclass(frozen=True)
class DeferredJpeg:
    """One slot's JPEG crop left for the device. ``box``: (left, top, right, bottom) in native pixels (the
    header's ``width`` x ``height``); ``start``/``stop``: its bytes in the chunk's ``jpeg_bytes``."""

    position: int  # in the batch
    width: int
    height: int
    box: Tuple[float, float, float, float]
    flip: bool
    source: str
    key: str
    start: int
    stop: int


class DecodeFailures:
    """Device-decode failures of one loader iteration, in the main process. The loader adds ``count`` to
    every batch's counters, as it adds the workers' cumulative counts; the first failure is said (default:
    a warning of the ``radio.data`` logger, like the workers' data notices)."""

    def __init__(self, prefix: str = "", say: Optional[Callable[[str], None]] = None):
        self.prefix = prefix
        self.say = say or logging.getLogger("radio.data").warning
        self.count = 0

    def add(self, jpeg: DeferredJpeg, why: str) -> None:
        self.count += 1
        if self.count == 1:
            self.say(
                f"{self.prefix}source {jpeg.source!r}: {DEVICE_DECODE_FAILED}: sample {jpeg.key} ({why}) passed "
                "the header checks but neither the device decoder nor PIL could decode it; its slot holds a "
                f"neutral grey crop, counted as data/{DEVICE_DECODE_FAILED} in metrics.jsonl"
            )


@dataclass
class DeferredCrops:
    """A batch's deferred JPEG crops: ``jpegs[i]`` with its bytes ``data[i]`` (uint8 [n] on the CPU)."""

    jpegs: List[DeferredJpeg]
    data: List[torch.Tensor]
    failures: DecodeFailures


class ChunkJpegs:
    """A worker's deferred JPEGs of one step, slot by slot, for its chunk."""

    def __init__(self):
        self.jpegs: List[DeferredJpeg] = []
        self._parts: List[bytes] = []
        self._size = 0

    def add(self, position: int, plan: CropPlan, data: bytes, source: str, key: str) -> None:
        start, self._size = self._size, self._size + len(data)
        self._parts.append(data)
        self.jpegs.append(
            DeferredJpeg(position, plan.width, plan.height, plan.box, plan.flip, source, key, start, self._size)
        )

    def packed(self) -> Optional[torch.Tensor]:
        """The JPEGs' bytes back to back in one uint8 tensor (None: no JPEG): the chunk passes it to the main
        process through one shared-memory block, where a tensor per JPEG would cost a handle and a mapping each."""
        return torch.frombuffer(bytearray().join(self._parts), dtype=torch.uint8) if self._parts else None


def with_device_images(batch: "Batch", images: torch.Tensor) -> "Batch":
    """``batch`` with ``images`` (its uint8 [B,3,S,S] crops, already on the training device) and its deferred
    JPEG crops decoded into them; a failure is added to its counters and to the position a checkpoint saves."""
    if batch.deferred is None:
        return dataclasses.replace(batch, images=images)
    failed = decode_into(images, batch.deferred)
    counters, position = batch.counters, batch.position
    if failed:
        counters = {**counters, DEVICE_DECODE_FAILED: counters.get(DEVICE_DECODE_FAILED, 0) + failed}
        if position is not None:
            position = {**position, "counters": dict(counters)}
    return dataclasses.replace(batch, images=images, deferred=None, counters=counters, position=position)


def decode_into(images: torch.Tensor, deferred: DeferredCrops) -> int:
    """Decode, crop, resize and flip every deferred JPEG into its row of ``images`` (uint8 [B,3,S,S], on the
    device that decodes); returns how many got the neutral crop instead."""
    size, device = images.shape[-1], images.device
    failed = 0
    for jpeg, data, pixels in zip(deferred.jpegs, deferred.data, _decode_all(deferred.data, device)):
        why = ""
        if pixels is None:
            pixels, why = _decode_with_pil(data, device)
        if pixels is None:
            images[jpeg.position].fill_(NEUTRAL_GREY)
            deferred.failures.add(jpeg, why)
            failed += 1
            continue
        images[jpeg.position].copy_(crop_resize_flip(pixels, jpeg, size))
    return failed


def crop_resize_flip(pixels: torch.Tensor, jpeg: DeferredJpeg, size: int) -> torch.Tensor:
    """uint8 [3,H,W] decoded image -> uint8 [3,size,size] crop of ``jpeg.box`` (flipped when ``jpeg.flip``).

    The box is rounded to whole pixels as the CPU path rounds it; the resize runs in float32 (the device
    kernels have no uint8 antialiased path) and is rounded back to uint8.
    """
    height, width = pixels.shape[1:]
    factor_x, factor_y = width / jpeg.width, height / jpeg.height  # 1 unless a decoder disagrees with the header
    box = jpeg.box
    left, right = pixel_span(box[0] * factor_x, box[2] * factor_x, width)
    top, bottom = pixel_span(box[1] * factor_y, box[3] * factor_y, height)
    region = pixels[:, top:bottom, left:right].unsqueeze(0).float()
    resized = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    crop = resized.round_().clamp_(0, 255).to(torch.uint8)
    return crop.flip(-1) if jpeg.flip else crop


def _decode_all(data: List[torch.Tensor], device: torch.device) -> List[Optional[torch.Tensor]]:
    """uint8 [3,H,W] per JPEG on ``device`` (None: undecodable there). One batched call; a batch with an
    undecodable JPEG fails as a whole, so then each is decoded on its own to find it."""
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except torch.OutOfMemoryError:  # the device's problem, not the data's: it must stop the run, not grey a crop
        raise
    except RuntimeError:
        decoded = []
        for one in data:
            try:
                decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                decoded.append(None)
        return decoded


def _decode_with_pil(data: torch.Tensor, device: torch.device) -> Tuple[Optional[torch.Tensor], str]:
    """PIL's decode (more tolerant of damaged JPEGs than nvJPEG) -> (uint8 [3,H,W] on ``device``, "") or
    (None, why)."""
    try:
        pixels = decode_with_pil(data.numpy().tobytes())
    except SampleDropped as dropped:
        return None, str(dropped)
    return torch.from_numpy(pixels).permute(2, 0, 1).to(device), ""
