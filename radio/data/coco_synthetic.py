"""A synthetic COCO detection set (no downloads): coloured shapes with exact boxes on textured backgrounds.

No pip package ships a real detection set, so detection tests, demos and benchmarks write one. Each class is a
(shape, colour) pair; objects never overlap, so every box is exactly its shape's visible extent. The layout is
TAO's data source: ``{image_dir, json_file}`` per split, the JSON in COCO's format (pycocotools reads it).
"""

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from radio.data.synthetic import jpeg_bytes
from radio.errors import SpecError

SHAPES = ("rectangle", "ellipse", "triangle")
COLOURS = (
    ("red", (220, 40, 40)),
    ("green", (40, 190, 60)),
    ("blue", (50, 70, 230)),
    ("yellow", (235, 215, 40)),
)
# Class k is shape k % 3 in colour k % 4: 3 and 4 are coprime, so the 12 pairs are distinct, and the first
# classes differ in shape and colour both.
DETECTION_CLASSES: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = tuple(
    (f"{COLOURS[k % len(COLOURS)][0]}_{SHAPES[k % len(SHAPES)]}", SHAPES[k % len(SHAPES)], COLOURS[k % len(COLOURS)][1])
    for k in range(len(SHAPES) * len(COLOURS))
)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Sequence[int], fill) -> None:
    """Fill ``shape`` so that its pixels span exactly the COCO box ``[x, y, w, h]`` (integers, pixels):
    columns ``x .. x+w-1`` and rows ``y .. y+h-1``. PIL's coordinates are inclusive, hence the ``- 1``."""
    x, y, w, h = box
    x1, y1 = x + w - 1, y + h - 1
    if shape == "rectangle":
        draw.rectangle((x, y, x1, y1), fill=fill)
    elif shape == "ellipse":
        draw.ellipse((x, y, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x + (w - 1) / 2, y), (x, y1), (x1, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def textured_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A dim gradient with stripes or a checkerboard and pixel noise: texture the detector must learn to ignore,
    kept darker than every class colour."""
    top, bottom = rng.integers(15, 80, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    base = top * (1 - ramp) + bottom * ramp
    period = int(rng.integers(6, 24))
    rows, cols = np.mgrid[0:height, 0:width]
    if rng.random() < 0.5:
        pattern = ((rows + cols) // period) % 2
    else:
        pattern = ((rows // period) + (cols // period)) % 2
    texture = pattern[..., None] * rng.integers(5, 25, size=3)
    noise = rng.integers(-10, 11, size=(height, width, 3))
    return Image.fromarray(np.clip(base + texture + noise, 0, 255).astype(np.uint8))


def overlaps(box: Sequence[int], others: Sequence[Sequence[int]], gap: int = 2) -> bool:
    """Whether the ``[x, y, w, h]`` box comes within ``gap`` pixels of any of ``others``."""
    x, y, w, h = box
    return any(
        x < ox + ow + gap and ox < x + w + gap and y < oy + oh + gap and oy < y + h + gap for ox, oy, ow, oh in others
    )


def place_objects(
    rng: np.random.Generator, width: int, height: int, count: int, extent_range: Tuple[int, int]
) -> List[List[int]]:
    """Up to ``count`` non-overlapping integer boxes ``[x, y, w, h]`` inside the image (rejection sampling; a
    crowded image keeps the ones that fit)."""
    boxes: List[List[int]] = []
    low, high = extent_range
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        w, h = (int(v) for v in rng.integers(low, min(high, width, height) + 1, size=2))
        box = [int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h]
        if not overlaps(box, boxes):
            boxes.append(box)
    return boxes


def synthetic_detection_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    num_classes: int,
    max_objects: int,
    extent_range: Tuple[int, int],
) -> Tuple[Image.Image, List[Tuple[int, List[int]]]]:
    """One image and its objects as ``(class_index, [x, y, w, h])``; colours jittered by up to ±20 per channel."""
    image = textured_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    objects = []
    for box in place_objects(rng, width, height, int(rng.integers(1, max_objects + 1)), extent_range):
        class_index = int(rng.integers(0, num_classes))
        _, shape, colour = DETECTION_CLASSES[class_index]
        fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in colour)
        draw_shape(draw, shape, box, fill)
        objects.append((class_index, box))
    return image, objects


def write_synthetic_coco(
    root: str,
    splits: Dict[str, int],
    *,
    seed: int,
    num_classes: int = 3,
    size_range: Tuple[int, int] = (96, 192),
    max_objects: int = 4,
    extent_range: Tuple[int, int] = (12, 80),
) -> Dict[str, Dict[str, str]]:
    """Write a COCO detection set: per split ``{root}/{split}/images/{id:06d}.jpg`` and
    ``{root}/{split}/annotations.json``, ``splits[split]`` images each.

    Image width and height are drawn from ``size_range`` (pixels, inclusive), box sides from ``extent_range``.
    Category ids are ``1..num_classes`` (COCO's convention: label ``k`` is category ``k + 1``); image and
    annotation ids are unique across splits. The same ``seed`` writes the same bytes. Returns TAO's data
    sources: ``{split: {"image_dir": ..., "json_file": ...}}``.
    """
    if not 1 <= num_classes <= len(DETECTION_CLASSES):
        raise SpecError(f"num_classes={num_classes}: the synthetic COCO set has 1..{len(DETECTION_CLASSES)} classes")
    rng = np.random.default_rng(seed)
    categories = [
        {"id": index + 1, "name": name, "supercategory": shape}
        for index, (name, shape, _) in enumerate(DETECTION_CLASSES[:num_classes])
    ]
    sources = {}
    image_id = annotation_id = 0
    for split, count in splits.items():
        image_dir = os.path.join(root, split, "images")
        os.makedirs(image_dir, exist_ok=True)
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            image, objects = synthetic_detection_image(rng, width, height, num_classes, max_objects, extent_range)
            file_name = f"{image_id:06d}.jpg"
            with open(os.path.join(image_dir, file_name), "wb") as stream:
                stream.write(jpeg_bytes(image, quality=95))
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for class_index, box in objects:
                annotation_id += 1
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": class_index + 1,
                        "bbox": [float(v) for v in box],
                        "area": float(box[2] * box[3]),
                        "iscrowd": 0,
                    }
                )
        json_file = os.path.join(root, split, "annotations.json")
        with open(json_file, "w") as stream:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, stream)
        sources[split] = {"image_dir": image_dir, "json_file": json_file}
    return sources
