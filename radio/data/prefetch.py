"""Copy the next batch's crops to the GPU while the current step computes (``dataset.device_prefetch``).

The loader's batches live in host memory. Copied at the start of each step, the step waits for the copy
(tens of MB at high resolution) before any kernel runs. ``DevicePrefetcher`` instead pins batch k+1's crops
and starts their copy on a side CUDA stream as soon as batch k is handed out, so the copy overlaps step k's
compute; the compute stream waits for the copy only when batch k+1 is used. With ``dataset.decode_on_device``
batch k+1's JPEG crops are decoded on that side stream as well (``data/device_decode.py``). Off CUDA it
reads one batch ahead all the same, without copying (the engine uses it on CUDA only; tests use it to check
that reading ahead does not move what a checkpoint saves: ``Batch.position``).
"""

from typing import Iterator, Optional

import torch

from radio.data.device_decode import with_device_images
from radio.data.loader import Batch


class DevicePrefetcher:
    """Iterator of ``Batch`` whose ``images`` are already on ``device`` (a CUDA device) when handed out."""

    def __init__(self, batches: Iterator[Batch], device: torch.device):
        self.batches = batches
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._next: Optional[Batch] = None

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def _start_copy(self) -> Optional[Batch]:
        try:
            batch = next(self.batches)
        except StopIteration:
            return None
        if self.stream is None:
            return batch
        with torch.cuda.stream(self.stream):
            images = batch.images if batch.images.is_pinned() else batch.images.pin_memory()
            # Deferred JPEG crops (dataset.decode_on_device) are decoded into the copy on this stream too.
            return with_device_images(batch, images.to(self.device, non_blocking=True))

    def __next__(self) -> Batch:
        batch = self._next if self._next is not None else self._start_copy()
        if batch is None:
            raise StopIteration
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)  # the copy is done before the step's first kernel reads it
            batch.images.record_stream(current)  # its memory is not reused while the step still reads it
        self._next = self._start_copy()
        return batch
