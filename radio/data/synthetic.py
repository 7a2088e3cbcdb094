"""Procedurally generated images for tests, quickstart and benchmarks (no downloads): unlabelled shards, and
labelled class folders for kNN evaluation."""

import io
import json
import os
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw


def synthetic_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One visually varied RGB image: a colour gradient, a few random shapes and pixel noise."""
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = (top * (1 - ramp) + bottom * ramp).astype(np.int16)
    noise = rng.integers(-16, 17, size=(height, width, 3), dtype=np.int16)
    image = Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_synthetic_shards(
    out_dir: str,
    num_images: int,
    samples_per_shard: int,
    *,
    seed: int,
    size_range: Tuple[int, int] = (64, 160),
    with_json: bool = False,
    with_cls: bool = False,
    prefix: str = "shard",
    num_classes: int = 10,
) -> Sequence[str]:
    """Write ``num_images`` JPEG samples as WebDataset shards ``{out_dir}/{prefix}-%06d.tar``.

    Each image's width and height are drawn independently from ``size_range`` (pixels, inclusive).
    ``with_json`` adds a ``.json`` sidecar (``uid``, a dedup key); ``with_cls`` a ``.cls`` label in
    ``[0, num_classes)``. Keys are ``{prefix}_{seed}_{index:07d}``, so two sources written with
    different seeds or prefixes never share keys. Returns the shard paths, sorted.
    """
    import webdataset as wds

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    pattern = os.path.join(out_dir, f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=samples_per_shard, verbose=0) as sink:
        for index in range(num_images):
            width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            key = f"{prefix}_{seed}_{index:07d}"
            sample = {"__key__": key, "jpg": jpeg_bytes(synthetic_image(rng, width, height))}
            if with_json:
                sample["json"] = json.dumps({"uid": key}).encode()
            if with_cls:
                sample["cls"] = str(int(rng.integers(0, num_classes))).encode()
            sink.write(sample)
    return sorted(os.path.join(out_dir, name) for name in os.listdir(out_dir) if name.endswith(".tar"))


# Classes a random-init network can tell apart: each its own colour and shape on a random background.
LABELLED_CLASSES = (
    ("red_discs", (220, 40, 40), "ellipse"),
    ("green_squares", (40, 190, 60), "rectangle"),
    ("blue_triangles", (50, 70, 230), "triangle"),
)


def labelled_image(rng: np.random.Generator, class_index: int, size: int) -> Image.Image:
    """A ``size`` x ``size`` image of class ``class_index`` of ``LABELLED_CLASSES``: its shape, in its colour
    (jittered), at a random place and scale over a dim noisy background."""
    _, colour, shape = LABELLED_CLASSES[class_index]
    background = rng.integers(20, 90, size=3)
    noise = rng.integers(-12, 13, size=(size, size, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    extent = int(rng.integers(size // 2, size - 4))
    x0, y0 = (int(v) for v in rng.integers(0, size - extent + 1, size=2))
    box = (x0, y0, x0 + extent, y0 + extent)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    draw = ImageDraw.Draw(image)
    if shape == "ellipse":
        draw.ellipse(box, fill=fill)
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + extent // 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=fill)
    return image


def write_labelled_folders(root: str, per_class: Dict[str, int], *, seed: int, size: int = 64) -> None:
    """An image folder per split with one sub-folder per class (the layout ``radio eval --knn-train/--knn-val``
    and ``radio shards write`` read): ``{root}/{split}/{class}/{index:04d}.jpg``, ``per_class[split]`` images
    of each of ``LABELLED_CLASSES``."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for class_index, (name, _, _) in enumerate(LABELLED_CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for index in range(count):
                with open(os.path.join(folder, f"{index:04d}.jpg"), "wb") as stream:
                    stream.write(jpeg_bytes(labelled_image(rng, class_index, size)))
