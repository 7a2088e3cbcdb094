"""The device prefetcher hands out the loader's batches in order while reading one ahead (on CUDA its copies are
measured by tools/bench/step_throughput.py against dataset.device_prefetch=false); resuming after it read ahead
is exact (tests/engine/test_resume.py)."""

import torch

from radio.data.loader import Batch
from radio.data.prefetch import DevicePrefetcher


def batches(n: int):
    for step in range(n):
        images = torch.full((2, 3, 4, 4), step, dtype=torch.uint8)
        yield Batch(
            images, ["a", "b"], torch.zeros(2, dtype=torch.int64), torch.full((2,), -1), step, {"student": 4}, {}
        )


def test_the_batches_come_in_order_with_one_read_ahead():
    read = []

    def source():
        for batch in batches(3):
            read.append(batch.step)
            yield batch

    prefetcher = DevicePrefetcher(source(), torch.device("cpu"))
    first = next(prefetcher)
    assert first.step == 0 and read == [0, 1]  # the next batch is already on its way
    rest = list(prefetcher)
    assert [b.step for b in rest] == [1, 2] and all(int(b.images[0, 0, 0, 0]) == b.step for b in rest)
