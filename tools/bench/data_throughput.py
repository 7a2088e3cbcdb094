"""Data-loader throughput: radio's TrainLoader vs a plain webdataset + PIL pipeline, same shards, same crops.

Both pipelines read the same WebDataset shards and emit uint8 [B,3,S,S] batches of random-resized crops
(crop area 35-100%, aspect 3/4-4/3, horizontal flip), with S = 224 by default. The plain pipeline decodes
every JPEG at full size, as ``webdataset`` + ``PIL`` (+ torchvision-style crop/resize) do; radio decodes
large JPEGs at reduced size (``Image.draft``) and reads tars with header seeks. Cases: small (500x375)
and large (1600x1200) JPEGs, 1 and 2 DataLoader workers. Prints a Markdown table (images/s and ratio).

    python tools/bench/data_throughput.py [--images-small 960] [--images-large 320] [--size 224]
"""
import argparse
import io
import os
import random
import tempfile
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from radio.config.schema import DatasetConfig, TarDataSource, TrainDatasetConfig
from radio.data.crops import random_crop_box
from radio.data.loader import TrainLoader
from radio.data.synthetic import jpeg_bytes, synthetic_image
from radio.data.views import ViewPlan, ViewSpec

BATCH = 32
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


def run_plain(shards: list, workers: int, images: int, size: int) -> float:
    dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(lambda s: plain_crop(s, size))
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, prefetch_factor=4)
    return _images_per_second(iter(loader), images)


def run_radio(root: str, workers: int, images: int, size: int) -> float:
    cfg = DatasetConfig(batch_size=BATCH, workers=workers,
                        train_dataset=TrainDatasetConfig(tar_data_sources=[TarDataSource(root_dir=root)]))
    plan = ViewPlan(ViewSpec("student", size, 16), [], seed=0)
    loader = TrainLoader(cfg, plan, seed=0, rank=0, world_size=1)
    return _images_per_second((batch.images for batch in loader), images)


def _images_per_second(batches, images: int) -> float:
    next(batches)  # worker start-up and the first prefetch are not throughput
    start, seen = time.perf_counter(), 0
    while seen < images:
        seen += next(batches).shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images-small", type=int, default=960, help="images timed per small-JPEG run")
    parser.add_argument("--images-large", type=int, default=320, help="images timed per large-JPEG run")
    parser.add_argument("--size", type=int, default=224, help="crop resolution S")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("small 500x375", 500, 375, args.images_small), ("large 1600x1200", 1600, 1200, args.images_large)]
    print(f"| case | workers | plain webdataset+PIL (img/s) | radio (img/s) | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, width, height, images in cases:
            root = os.path.join(tmp, name.split()[0])
            os.makedirs(root)
            shards = write_shards(root, images + 2 * BATCH, width, height)
            for workers in args.workers:
                plain = run_plain(shards, workers, images, args.size)
                ours = run_radio(root, workers, images, args.size)
                print(f"| {name} | {workers} | {plain:.1f} | {ours:.1f} | {ours / plain:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
