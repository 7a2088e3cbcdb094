"""Deterministic evaluation images: an image folder (class sub-folders) or a folder of WebDataset shards.

Every image is resized so its short side is ``size`` and centre-cropped to ``size`` x ``size`` (the usual
eval transform); labels come from the class sub-folder (sorted names -> 0, 1, ...) or a shard sample's
``.cls`` member, -1 when absent or unreadable. Undecodable images are skipped and counted, damaged shards
read as far as they can be; neither is fatal. Bad data is said once the read ends, one line per kind of
problem (``radio/data/problem_tally.py``).
"""

import glob
import io
import os
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch
from PIL import Image

from radio.data.problem_tally import ProblemTally
from radio.data.shard_records import ShardProblem, ShardReader
from radio.data.sources import discover_folder_source
from radio.errors import DataError

# ``radio eval`` reads its image folder once per measure: what a read met is said once per process.
_SAID: Set[Tuple[str, str, int]] = set()


@dataclass
class ReadStats:
    images: int = 0
    skipped: int = 0  # undecodable images


def center_crop(data: bytes, size: int) -> np.ndarray:
    """Image bytes -> uint8 [size, size, 3]: short side resized to ``size`` (antialiased), centre crop."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers ``size``
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _shard_records(shards: List[str], report: Callable[[ShardProblem], None]) -> Iterator[Tuple[str, bytes, int]]:
    """(key, image bytes, label) of every shard sample with an image, in shard order; bad data goes to
    ``report`` and is skipped (damaged shards: what is readable)."""
    for shard in shards:
        for record in ShardReader(shard, report):
            if record.has_image:
                yield f"{shard} sample {record.key!r}", record.read_image(), record.label


def _folder_records(root: str) -> Iterator[Tuple[str, bytes, int]]:
    source = discover_folder_source(root, root)
    for rel, label in zip(source.files, source.labels):
        path = os.path.join(source.root, rel)
        with open(path, "rb") as f:
            yield path, f.read(), label


def _shards_under(path: str) -> List[str]:
    return sorted(glob.glob(os.path.join(os.path.abspath(path), "**", "*.tar"), recursive=True))


def _records(path: str, tally: ProblemTally) -> Iterator[Tuple[str, bytes, int]]:
    if not os.path.isdir(path):
        raise DataError(
            f"{path!r} is not a directory; pass an image folder (class sub-folders) or a folder of *.tar shards"
        )
    shards = _shards_under(path)
    return _shard_records(shards, tally.shard_reporter(path)) if shards else _folder_records(path)


def folder_class_names(path: str) -> Optional[List[str]]:
    """Class names of an image folder, by label (its class sub-folders, as the reader numbers them); None for
    a folder of shards (``.cls`` labels are numbers only)."""
    if _shards_under(path):
        return None
    source = discover_folder_source(path, path)
    names: dict = {}
    for rel, label in zip(source.files, source.labels):
        if label >= 0:
            names.setdefault(label, rel.split(os.sep, 1)[0])
    return [names[i] for i in sorted(names)]


def iter_image_batches(
    path: str, size: int, batch_size: int, max_images: Optional[int] = None, stats: Optional[ReadStats] = None
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches (uint8 [B, 3, size, size], int64 labels [B]) of the images under ``path``, in a fixed order.

    Raises ``DataError`` when ``path`` holds no readable image.
    """
    stats = stats if stats is not None else ReadStats()
    tally = ProblemTally()
    images: List[np.ndarray] = []
    labels: List[int] = []
    try:  # the problems are said also when the caller stops early (a PCA takes the first batch only)
        for where, data, label in _records(path, tally):
            if max_images is not None and stats.images >= max_images:
                break
            try:
                images.append(center_crop(data, size))
            except Exception as exc:  # PIL raises many types for undecodable bytes
                stats.skipped += 1
                tally.note(path, "error/corrupt_image", "image", f"{where} ({type(exc).__name__}: {exc})")
                continue
            labels.append(label)
            stats.images += 1
            if len(images) == batch_size:
                yield _stack(images, labels)
                images, labels = [], []
        if images:
            yield _stack(images, labels)
    finally:
        tally.close("undecodable images and unreadable shard parts are left out, the other images are used", _SAID)
    if stats.images == 0:
        raise DataError(
            f"{path}: no readable images found (image folder or *.tar shards with jpg/png/... members expected)"
        )


def _stack(images: List[np.ndarray], labels: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return batch, torch.tensor(labels, dtype=torch.int64)
