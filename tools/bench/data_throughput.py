"""Data-loader throughput: radio's TrainLoader vs a plain webdataset + PIL pipeline, same shards, same crops.

Both pipelines read the same WebDataset shards and emit uint8 [B,3,S,S] batches of random-resized crops
(crop area 35-100%, aspect 3/4-4/3, horizontal flip), with S = 224 by default. The plain pipeline decodes
every JPEG at full size, as ``webdataset`` + ``PIL`` (+ torchvision-style crop/resize) do; radio decodes
JPEGs with libjpeg-turbo (``simplejpeg``; at 1/2, 1/4 or 1/8 scale when the crop allows), resizes the crop
with torch's uint8 antialiased kernel, writes it straight into the step's chunk and reads tars with header
seeks. Cases: small (500x375) and large (1600x1200) JPEGs.

Two measurements per case, printed as a Markdown table:
- per core: both pipelines in this process (no workers), images per second of *CPU time*
  (``time.process_time``), which other load on a shared machine barely disturbs;
- wall clock with 1 and 2 DataLoader workers: images per second, best of ``--repeats`` alternating runs.

    python tools/bench/data_throughput.py [--images-small 960] [--images-large 320] [--size 224]

``--decode-on-device DEVICE`` (cpu, cuda) adds a second table for ``dataset.decode_on_device``, in this process
(no workers): the workers' CPU time per image (read, header, crop plan; colour JPEGs not decoded) against
radio's CPU decode, and the main process's time per image to decode, crop and resize the batch's JPEGs on
DEVICE (wall clock, the device synchronised per batch). On cpu it is informative only (the same CPU does the
decoding, through torchvision's libjpeg at full scale); on cuda it is nvJPEG's real cost.
"""

import argparse
import io
import os
import platform
import random
import tempfile
import time
from importlib.metadata import version

import numpy as np
import PIL
import simplejpeg
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from radio.config.schema import DatasetConfig, TarDataSource, TrainDatasetConfig
from radio.data.crops import random_crop_box
from radio.data.device_decode import with_device_images
from radio.data.loader import TrainLoader
from radio.data.synthetic import jpeg_bytes, synthetic_image
from radio.data.views import ViewPlan, ViewSpec

BATCH = 32
SETTLE_S = 4.0  # long enough for the workers to fill their prefetch buffers
SCALE, RATIO = (0.35, 1.0), (3.0 / 4.0, 4.0 / 3.0)


def write_shards(out_dir: str, count: int, width: int, height: int, per_shard: int = 64) -> list:
    """``count`` JPEGs (quality 90) of ``width`` x ``height``; a few distinct images, repeated, to keep set-up
    short (decode cost does not depend on repetition)."""
    rng = np.random.default_rng(0)
    distinct = [jpeg_bytes(synthetic_image(rng, width, height)) for _ in range(8)]
    pattern = os.path.join(out_dir, "bench-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for index in range(count):
            sink.write({"__key__": f"{index:08d}", "jpg": distinct[index % len(distinct)]})
    return sorted(os.path.join(out_dir, name) for name in os.listdir(out_dir) if name.endswith(".tar"))


def plain_crop(sample: dict, size: int) -> torch.Tensor:
    """The plain pipeline's per-sample work: full decode, random-resized crop, resize, flip."""
    rng = random.Random(sample["__key__"])
    image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    box = random_crop_box(rng, image.width, image.height, SCALE, RATIO)
    crop = image.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.array(crop)).permute(2, 0, 1)


PREFETCH = 4  # batches (plain) or steps (radio) each worker prepares ahead


def run_plain(shards: list, workers: int, images: int, size: int, clock) -> float:
    dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(lambda s: plain_crop(s, size))
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, prefetch_factor=PREFETCH if workers else None)
    return _images_per_second(iter(loader), images, clock, buffered=PREFETCH * workers)


def radio_loader(root: str, workers: int, size: int, decode_on_device: bool = False) -> TrainLoader:
    cfg = DatasetConfig(
        batch_size=BATCH,
        workers=workers,
        decode_on_device=decode_on_device,
        train_dataset=TrainDatasetConfig(
            tar_data_sources=[TarDataSource(root_dir=root, samples_per_file=64)],
            drop_near_constant=not decode_on_device,  # that filter needs the pixels in the worker
        ),
    )
    plan = ViewPlan(ViewSpec("student", size, 16), [], seed=0)
    return TrainLoader(cfg, plan, seed=0, rank=0, world_size=1)


def run_radio(root: str, workers: int, images: int, size: int, clock) -> float:
    loader = radio_loader(root, workers, size)
    # Every radio worker contributes a chunk to every step, so PREFETCH steps are buffered in all.
    return _images_per_second((batch.images for batch in loader), images, clock, buffered=PREFETCH if workers else 0)


def _images_per_second(batches, images: int, clock, buffered: int) -> float:
    """Steady-state rate: wait until the workers' buffers are full, empty them, then time ``images``."""
    next(batches)
    if buffered:
        time.sleep(SETTLE_S)
        for _ in range(buffered):
            next(batches)
    start, seen = clock(), 0
    while seen < images:
        seen += next(batches).shape[0]
    return seen / (clock() - start)


def run_device_decode(root: str, images: int, size: int, device: torch.device) -> tuple:
    """(worker CPU ms per image, main-process decode ms per image) of ``dataset.decode_on_device``, in this
    process: the loader's work (CPU time) and ``with_device_images`` (wall clock, device synchronised)."""
    batches = iter(radio_loader(root, 0, size, decode_on_device=True))
    first = next(batches)
    with_device_images(first, first.images.to(device))  # the device's and the decoder's set-up: not timed
    _synchronize(device)
    worker_s = decode_s = 0.0
    seen = 0
    while seen < images:
        start = time.process_time()
        batch = next(batches)
        worker_s += time.process_time() - start
        start = time.perf_counter()
        decoded = with_device_images(batch, batch.images.to(device))
        _synchronize(device)
        decode_s += time.perf_counter() - start
        seen += decoded.images.shape[0]
    return 1000 * worker_s / seen, 1000 * decode_s / seen


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run, path: str, workers: int, images: int, size: int, repeats: int) -> float:
    clock = time.process_time if workers == 0 else time.perf_counter
    return max(run(path, workers, images, size, clock) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images-small", type=int, default=960, help="images timed per small-JPEG run")
    parser.add_argument("--images-large", type=int, default=320, help="images timed per large-JPEG run")
    parser.add_argument("--size", type=int, default=224, help="crop resolution S")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best is reported)")
    parser.add_argument(
        "--decode-on-device",
        metavar="DEVICE",
        help="also measure dataset.decode_on_device with the JPEGs decoded on DEVICE (cpu, cuda): a second table",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, Pillow {PIL.__version__}, "
        f"simplejpeg {simplejpeg.__version__}, webdataset {version('webdataset')}, {os.cpu_count()} CPUs\n"
    )
    cases = [("small 500x375", 500, 375, args.images_small), ("large 1600x1200", 1600, 1200, args.images_large)]
    print("| case | measurement | plain webdataset+PIL (img/s) | radio (img/s) | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, width, height, images in cases:
            root = os.path.join(tmp, name.split()[0])
            os.makedirs(root)
            shards = write_shards(root, images + (2 * PREFETCH + 2) * BATCH, width, height)
            for workers, label in (
                (0, "per core (CPU time, in-process)"),
                (1, "1 worker (wall clock)"),
                (2, "2 workers (wall clock)"),
            ):
                plain = measure(lambda p, *a: run_plain(shards, *a), root, workers, images, args.size, args.repeats)
                ours = measure(run_radio, root, workers, images, args.size, args.repeats)
                print(f"| {name} | {label} | {plain:.1f} | {ours:.1f} | {ours / plain:.2f}x |", flush=True)
        if args.decode_on_device:
            print_device_decode(tmp, cases, args)


def print_device_decode(tmp: str, cases: list, args) -> None:
    """The ``--decode-on-device`` table, over the shards the first table wrote."""
    device = torch.device(args.decode_on_device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndataset.decode_on_device, JPEGs decoded on {device} ({where}); in-process, best of {args.repeats}\n")
    print(
        "| case | worker CPU, radio CPU decode (ms/img) | worker CPU, decode_on_device (ms/img) | main-process "
        f"decode on {device.type} (ms/img) |"
    )
    print("|---|---|---|---|")
    for name, _, _, images in cases:
        root = os.path.join(tmp, name.split()[0])
        cpu_decode = 1000 / measure(run_radio, root, 0, images, args.size, args.repeats)
        runs = [run_device_decode(root, images, args.size, device) for _ in range(args.repeats)]
        worker, decode = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"| {name} | {cpu_decode:.2f} | {worker:.2f} | {decode:.2f} |", flush=True)


if __name__ == "__main__":
    main()
