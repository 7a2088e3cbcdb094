"""Memory and time per image for a mix of very different resolutions: SAM at 1024 px next to a 224 px teacher
and a 432 px student, with SAM fed directly (1024 px crops) or as a 2x2 mosaic (512 px crops).

Two parts, each printed as a Markdown table:
- data path (this process, no workers; CPU time per image, ``time.process_time``): radio's TrainLoader
  decoding random-resized crops at the step's largest view (1024 or 512), plus the device-side views made
  from them (``make_view``); bytes of the uint8 crop per image.
- teacher side: one SAM forward per sample at 1024 vs one per four samples (a 2x2 mosaic of 512 px views),
  wall time per image over ``--batch`` samples. ``--sam tiny_sam_vit_patch16`` (default, seconds on a CPU)
  or ``sam_vit_b`` / ``sam_vit_h`` (random weights; minutes per image on a CPU, meant for a GPU). On CUDA
  the peak memory of each variant is reported too.

    python tools/bench/view_mix.py [--images 96] [--sam tiny_sam_vit_patch16] [--batch 4]
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_throughput import write_shards  # noqa: E402  (sibling benchmark: same synthetic shards)

from radio.config.schema import DatasetConfig, TarDataSource, TrainDatasetConfig  # noqa: E402
from radio.data.loader import TrainLoader  # noqa: E402
from radio.data.mosaic import mosaic_pack, mosaic_unpack  # noqa: E402
from radio.data.views import ViewPlan, ViewSpec, make_view  # noqa: E402
from radio.models.registry import create_model  # noqa: E402

BATCH = 16
STUDENT, OTHER_TEACHER, SAM = 432, 224, 1024


def plan_for(sam_view: int) -> ViewPlan:
    return ViewPlan(
        ViewSpec("student", STUDENT, 16), [ViewSpec("dino", OTHER_TEACHER, 14), ViewSpec("sam", sam_view, 16)], seed=0
    )


def data_path(root: str, sam_view: int, images: int):
    """CPU seconds per image to decode and crop, then to make every view; bytes per uint8 crop."""
    cfg = DatasetConfig(
        batch_size=BATCH,
        workers=0,
        train_dataset=TrainDatasetConfig(tar_data_sources=[TarDataSource(root_dir=root, samples_per_file=64)]),
    )
    plan = plan_for(sam_view)
    batches = iter(TrainLoader(cfg, plan, seed=0, rank=0, world_size=1))
    next(batches)
    decode = views = 0.0
    seen = 0
    crop_bytes = 0
    while seen < images:
        start = time.process_time()
        batch = next(batches)
        middle = time.process_time()
        for spec in [plan.student, *plan.teachers]:
            make_view(batch.images, spec.size, spec.mean, spec.std)
        views += time.process_time() - middle
        decode += middle - start
        seen += batch.images.shape[0]
        crop_bytes = batch.images[0].numel()
    return decode / seen, views / seen, crop_bytes


def teacher_side(name: str, batch: int, device: torch.device):
    """Seconds (and peak bytes on CUDA) per image of SAM: direct at 1024 vs a 2x2 mosaic of 512 px views."""
    model = create_model(name, img_size=SAM).to(device).eval()
    images = torch.randint(0, 256, (batch, 3, SAM, SAM), dtype=torch.uint8, device=device)
    rows = []
    for label, mosaic in (("direct, 1024 px per sample", 1), ("2x2 mosaic of 512 px views", 2)):
        view = make_view(images, SAM // mosaic, (0.5,) * 3, (0.5,) * 3)
        with torch.inference_mode():
            model.forward_features(mosaic_pack(view[:1], mosaic))  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            feats = model.forward_features(mosaic_pack(view, mosaic))
            spatial = mosaic_unpack(feats, mosaic, batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / batch
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        rows.append((label, seconds, peak, tuple(spatial.shape[-2:])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images timed per data-path case")
    parser.add_argument("--sam", default="tiny_sam_vit_patch16", help="registry SAM encoder for the teacher side")
    parser.add_argument("--batch", type=int, default=4, help="samples per teacher-side measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| JPEGs | SAM input | crop side | uint8 crop per image | decode + crop (ms/img) | views (ms/img) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, height in (("500x375", 500, 375), ("1600x1200", 1600, 1200)):
            root = os.path.join(tmp, label)
            os.makedirs(root)
            write_shards(root, args.images + 2 * BATCH, width, height)
            for sam_label, sam_view in (("direct 1024", SAM), ("2x2 mosaic", SAM // 2)):
                decode, views, nbytes = data_path(root, sam_view, args.images)
                side = max(STUDENT, sam_view)
                print(
                    f"| {label} | {sam_label} | {side} | {nbytes / 2**20:.2f} MiB | {decode * 1e3:.1f} | "
                    f"{views * 1e3:.1f} |",
                    flush=True,
                )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\n| SAM teacher ({args.sam}, {device.type}) | s/img | peak memory | target grid per sample |")
    print("|---|---|---|---|")
    for label, seconds, peak, grid in teacher_side(args.sam, args.batch, device):
        memory = f"{peak / 2**30:.2f} GiB" if peak is not None else "n/a (CPU)"
        print(f"| {label} | {seconds:.3f} | {memory} | {grid[0]}x{grid[1]} |", flush=True)


if __name__ == "__main__":
    main()
