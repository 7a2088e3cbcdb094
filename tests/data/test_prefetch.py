"""The device prefetcher hands out the loader's batches unchanged (off CUDA it is a pass-through; on CUDA its
copies are measured by tools/bench/step_throughput.py with dataset.device_prefetch=false as the baseline)."""

import torch

from radio.data.loader import Batch
from radio.data.prefetch import DevicePrefetcher


def batches(n: int):
    for step in range(n):
        images = torch.full((2, 3, 4, 4), step, dtype=torch.uint8)
        yield Batch(images, ["a", "b"], torch.zeros(2, dtype=torch.int64), torch.full((2,), -1), step, {"student": 4}, {})


def test_off_cuda_the_batches_pass_through_in_order():
    got = list(DevicePrefetcher(batches(3), torch.device("cpu")))
    assert [b.step for b in got] == [0, 1, 2] and all(int(b.images[0, 0, 0, 0]) == b.step for b in got)
