"""The detection data loader: COCO sources (TAO's ``{image_dir, json_file}``) as batches in transformers' format.

Each batch's images are resized to one size, without keeping the aspect ratio, as RT-DETR trains
(transformers' ``RTDetrImageProcessor`` resizes to a fixed size); boxes are normalised ``cx, cy, w, h``, so a
resize leaves them as they are and a horizontal flip maps ``cx`` to ``1 - cx``.

Exact resume: every random choice is a pure function of (seed, epoch, index), drawn in the main process by the
batch sampler, never in a worker: the epoch's permutation of the concatenated sources (the same on every rank;
global batch ``g`` holds permuted positions ``[g*B*W, (g+1)*B*W)``, rank ``r`` takes ``[g*B*W + r*B, ... + B)``),
each image's flip (seed, epoch, dataset index) and each batch's size (seed, epoch, batch: the same on every
rank). So the batches after ``load_state_dict(s)`` are bit-identical to those that followed ``s``, whatever the
worker count.
"""

import atexit
import json
import multiprocessing
import os
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from radio.data.loader import release_workers, stop_signals_are_for_the_main_process
from radio.errors import SpecError

# Streams of randomness, one per kind of choice, so that no choice shifts another.
_PERMUTATION, _FLIP, _SCALE = range(3)


@dataclass
class DetectionBatch:
    """One rank's batch.

    ``pixel_values``: float32 [B, 3, H, W], normalised (``(x / 255 - mean) / std``). ``labels``: per image
    ``{"class_labels": int64 [n] (0-based), "boxes": float32 [n, 4]}`` (normalised cx, cy, w, h), the targets
    transformers' detectors train on. ``image_ids``: int64 [B], COCO image ids. ``orig_sizes``: int64 [B, 2],
    (height, width) of each image as stored, to post-process predictions to its pixels. ``sources``: int64 [B],
    each image's source (its index in the loader's sources: the realised mixture the metrics log). ``position``:
    the train loader's state right after this batch (checkpoint it once the batch is trained on); None for eval
    batches.
    """

    pixel_values: torch.Tensor
    labels: List[Dict[str, torch.Tensor]]
    image_ids: torch.Tensor
    orig_sizes: torch.Tensor
    sources: torch.Tensor
    position: Optional[dict] = None

    @property
    def keys(self) -> torch.Tensor:
        """One entry per image, as the engine's metrics window counts images (``radio/engine/metrics.py``)."""
        return self.image_ids

    def to(self, device) -> "DetectionBatch":
        """The pixels and the targets on ``device`` (ids and sizes stay: post-processing reads them on the host)."""
        return replace(
            self,
            pixel_values=self.pixel_values.to(device, non_blocking=True),
            labels=[{k: v.to(device, non_blocking=True) for k, v in target.items()} for target in self.labels],
        )

    def pin_memory(self) -> "DetectionBatch":
        """Called by the DataLoader's pin-memory thread, so that ``to(cuda)`` overlaps the copy."""
        return replace(
            self,
            pixel_values=self.pixel_values.pin_memory(),
            labels=[{k: v.pin_memory() for k, v in target.items()} for target in self.labels],
        )


class CocoDetectionSource:
    """One COCO detection source: the JSON read and checked at construction, images decoded on demand.

    Category ids, sorted ascending, are labels ``0..K-1`` (K must be ``dataset.num_classes``). Images are kept
    in id order, those without annotations too (no objects). Crowd annotations (``iscrowd=1``) and boxes with a
    non-positive width or height are left out of the targets; ``notes`` says how many. The JSON is read with
    the json module rather than pycocotools, which prints.
    """

    def __init__(self, image_dir: str, json_file: str, *, num_classes: int, where: str):
        self.image_dir, self.json_file, self.where = image_dir, json_file, where
        if not os.path.isfile(json_file):
            raise SpecError(f"{where}.json_file: {json_file} does not exist")
        if not os.path.isdir(image_dir):
            raise SpecError(f"{where}.image_dir: {image_dir} is not a directory")
        coco = self._read_json()
        self.category_ids = self._category_ids(coco["categories"])
        if len(self.category_ids) != num_classes:
            raise SpecError(
                f"dataset.num_classes={num_classes}, but {json_file} has {len(self.category_ids)} categories "
                f"(ids {self.category_ids[:10]}{' ...' if len(self.category_ids) > 10 else ''}): set "
                f"dataset.num_classes to {len(self.category_ids)}"
            )
        images = self._images(coco["images"])
        self.image_ids = [image_id for image_id, _, _ in images]
        self.paths = [os.path.join(image_dir, file_name) for _, file_name, _ in images]
        self.stored_sizes = [size for _, _, size in images]  # (height, width) from the JSON, or None
        self._check_files_exist()
        self.notes: List[str] = []
        self._labels, self._boxes, self._offsets = self._targets(coco["annotations"])
        parent = os.path.basename(os.path.dirname(os.path.normpath(image_dir)))
        self.name = parent or os.path.splitext(os.path.basename(json_file))[0]

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def _read_json(self) -> dict:
        try:
            with open(self.json_file) as stream:
                coco = json.load(stream)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SpecError(f"{self.where}.json_file: {self.json_file} cannot be read as JSON: {error}") from None
        keys = ("images", "annotations", "categories")
        if not isinstance(coco, dict) or not all(isinstance(coco.get(key), list) for key in keys):
            found = sorted(coco) if isinstance(coco, dict) else type(coco).__name__
            raise SpecError(
                f"{self.where}.json_file: {self.json_file} is not a COCO detection file: it needs the lists "
                f"'images', 'annotations' and 'categories' (found: {found})"
            )
        return coco

    def _problem(self, what: str) -> SpecError:
        return SpecError(f"{self.where}.json_file: {self.json_file}: {what}")

    def _category_ids(self, categories: list) -> List[int]:
        try:
            ids = [int(category["id"]) for category in categories]
        except (KeyError, TypeError, ValueError):
            raise self._problem("every entry of 'categories' needs an integer 'id'") from None
        if len(set(ids)) != len(ids):
            raise self._problem(f"duplicate category ids in 'categories': {sorted(ids)}")
        return sorted(ids)

    def _images(self, entries: list) -> List[Tuple[int, str, Optional[Tuple[int, int]]]]:
        """(id, file_name, (height, width) or None) per image, in id order."""
        images = []
        for index, entry in enumerate(entries):
            try:
                size = (int(entry["height"]), int(entry["width"])) if "height" in entry and "width" in entry else None
                images.append((int(entry["id"]), str(entry["file_name"]), size))
            except (KeyError, TypeError, ValueError):
                raise self._problem(
                    f"images[{index}] needs an integer 'id' and a 'file_name' (got {str(entry)[:200]})"
                ) from None
        images.sort(key=lambda image: image[0])
        ids = [image[0] for image in images]
        duplicates = sorted({a for a, b in zip(ids, ids[1:]) if a == b})
        if duplicates:
            raise self._problem(f"duplicate image ids {duplicates[:10]}")
        return images

    def _check_files_exist(self) -> None:
        missing = [path for path in self.paths if not os.path.isfile(path)]
        if missing:
            raise SpecError(
                f"{self.where}: {len(missing)} of the {len(self.paths)} images {self.json_file} lists are not in "
                f"image_dir {self.image_dir}, e.g. {', '.join(missing[:3])}"
            )

    def _targets(self, annotations: list) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels int64 [A], pixel boxes float64 [A, 4] (x, y, w, h) sorted by image, and offsets int64
        [num_images + 1] (image i's objects are rows ``offsets[i]:offsets[i+1]``): flat arrays, so the workers
        a DataLoader forks share them instead of copying per-object Python objects."""
        image_index = {image_id: index for index, image_id in enumerate(self.image_ids)}
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        rows, labels, boxes = [], [], []
        crowd = degenerate = 0
        for index, annotation in enumerate(annotations):
            try:
                image_id, category_id = int(annotation["image_id"]), int(annotation["category_id"])
                box = [float(v) for v in annotation["bbox"]]
            except (KeyError, TypeError, ValueError):
                raise self._problem(
                    f"annotations[{index}] needs an integer 'image_id' and 'category_id' and a 'bbox' of 4 numbers"
                ) from None
            if len(box) != 4:
                raise self._problem(f"annotations[{index}]: 'bbox' {box} is not [x, y, width, height]")
            if image_id not in image_index:
                raise self._problem(f"annotations[{index}] names image id {image_id}, which 'images' does not list")
            if category_id not in label_of:
                raise self._problem(
                    f"annotations[{index}] names category id {category_id}; the categories are {self.category_ids}"
                )
            if annotation.get("iscrowd", 0):
                crowd += 1
            elif not (box[2] > 0 and box[3] > 0):
                degenerate += 1
            else:
                rows.append(image_index[image_id])
                labels.append(label_of[category_id])
                boxes.append(box)
        if crowd or degenerate:
            self.notes.append(
                f"{self.json_file}: {crowd + degenerate} annotations left out of the training targets "
                f"({crowd} crowd (iscrowd=1), {degenerate} with a non-positive width or height)"
            )
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        offsets = np.zeros(self.num_images + 1, dtype=np.int64)
        np.cumsum(np.bincount(np.asarray(rows, dtype=np.int64), minlength=self.num_images), out=offsets[1:])
        return (
            np.asarray(labels, dtype=np.int64)[order],
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order],
            offsets,
        )

    def decode(self, index: int) -> torch.Tensor:
        """Image ``index`` (id order) as uint8 [3, H, W] RGB."""
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = np.array(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise SpecError(
                f"{self.where}: image {path} (id {self.image_ids[index]}) cannot be decoded: {error}"
            ) from None
        stored = self.stored_sizes[index]
        if stored is not None and stored != pixels.shape[:2]:
            raise SpecError(
                f"{self.where}: image {path} (id {self.image_ids[index]}) is {pixels.shape[0]}x{pixels.shape[1]} "
                f"(height x width), but {self.json_file} says {stored[0]}x{stored[1]}: its boxes would be wrong"
            )
        return torch.from_numpy(pixels).permute(2, 0, 1)

    def targets(self, index: int, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image ``index``'s labels int64 [n] and boxes float32 [n, 4], normalised cx, cy, w, h: clipped to the
        image first, those left with no width or height dropped."""
        start, end = self._offsets[index], self._offsets[index + 1]
        x, y, w, h = self._boxes[start:end].T
        x0, x1 = np.clip(x, 0, width), np.clip(x + w, 0, width)
        y0, y1 = np.clip(y, 0, height), np.clip(y + h, 0, height)
        keep = (x1 > x0) & (y1 > y0)
        boxes = np.stack([(x0 + x1) / (2 * width), (y0 + y1) / (2 * height), (x1 - x0) / width, (y1 - y0) / height], 1)
        return torch.from_numpy(self._labels[start:end][keep]), torch.from_numpy(boxes[keep].astype(np.float32))


def coco_sources(specs, *, num_classes: int, section: str) -> List[CocoDetectionSource]:
    """The spec's ``dataset.<section>`` entries as sources, their names made unique (they key the logged
    ``mixture/<name>``, ``val/<name>/...`` and eval.json): a second ``val`` becomes ``val_2``."""
    sources = [
        CocoDetectionSource(s.image_dir, s.json_file, num_classes=num_classes, where=f"dataset.{section}[{i}]")
        for i, s in enumerate(specs)
    ]
    seen: Dict[str, int] = {}
    for source in sources:
        seen[source.name] = seen.get(source.name, 0) + 1
        if seen[source.name] > 1:
            source.name = f"{source.name}_{seen[source.name]}"
    return sources


class _Request(NamedTuple):
    """What the sampler asks of one image: everything random already decided in the main process."""

    index: int  # into the concatenated sources
    flip: bool
    size: Tuple[int, int]  # (height, width) to resize to


@dataclass
class _Failure:
    """A problem met in a worker, returned as a value: the DataLoader re-raises a worker's exception with its
    traceback folded into the message, which the CLI would print whole; the main process raises this one."""

    message: str


class _DetectionImages(Dataset):
    """The concatenated sources as a map-style dataset of ``_Request`` -> one image, resized and normalised."""

    def __init__(self, sources: Sequence[CocoDetectionSource], norm_mean, norm_std):
        self.sources = list(sources)
        self.starts = np.cumsum([0] + [source.num_images for source in self.sources])
        self.mean, self.std = _normalisation(norm_mean, norm_std)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> Tuple[int, int]:
        """(source index, image index within it)."""
        position = int(np.searchsorted(self.starts, index, side="right")) - 1
        return position, index - int(self.starts[position])

    def __getitem__(self, request: _Request):
        source_index, local = self.locate(request.index)
        source = self.sources[source_index]
        try:
            pixels = source.decode(local)
        except SpecError as error:
            return _Failure(str(error))
        height, width = pixels.shape[1:]
        labels, boxes = source.targets(local, height, width)
        pixels = TF.resize(pixels, list(request.size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        if request.flip:
            pixels = pixels.flip(-1)
            boxes[:, 0] = 1 - boxes[:, 0]
        pixels = (pixels.float() / 255 - self.mean) / self.std
        target = {"class_labels": labels, "boxes": boxes}
        return pixels, target, source.image_ids[local], (height, width), source_index


def _collate(samples: list) -> Union[DetectionBatch, _Failure]:
    failures = [sample for sample in samples if isinstance(sample, _Failure)]
    if failures:
        return failures[0]
    pixels, labels, image_ids, sizes, sources = zip(*samples)
    return DetectionBatch(
        pixel_values=torch.stack(pixels),
        labels=list(labels),
        image_ids=torch.tensor(image_ids, dtype=torch.int64),
        orig_sizes=torch.tensor(sizes, dtype=torch.int64),
        sources=torch.tensor(sources, dtype=torch.int64),
    )


def _normalisation(norm_mean, norm_std) -> Tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(list(norm_mean), dtype=torch.float32), torch.tensor(list(norm_std), dtype=torch.float32)
    if mean.shape != (3,) or std.shape != (3,) or not bool((std > 0).all()):
        raise SpecError(
            f"dataset.augmentation.norm_mean={list(norm_mean)} / norm_std={list(norm_std)}: three values each "
            "(R, G, B), the std positive"
        )
    return mean.view(3, 1, 1), std.view(3, 1, 1)


def _size(value, where: str) -> Tuple[int, int]:
    """An int (square) or [height, width] as (height, width)."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value, value]
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise SpecError(f"{where}={value!r}: a size is a positive int (square) or [height, width] of positive ints")
    return values[0], values[1]


def _generator(*values: int) -> torch.Generator:
    """A generator seeded by a pure function of ``values`` (SeedSequence mixes them; nearby seeds give unrelated
    streams)."""
    seed = np.random.SeedSequence([int(v) % 2**63 for v in values]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def _data_loader(dataset: _DetectionImages, batch_sampler, workers: int, seed: int) -> Tuple[DataLoader, Callable]:
    """A DataLoader whose workers leave the stop signals to the main process (``radio/data/loader.py``), with a
    private generator: without one it draws a seed from the global RNG, which training uses too."""
    released = multiprocessing.RawValue("b", 0)
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=partial(stop_signals_are_for_the_main_process, released) if workers else None,
    )
    return loader, partial(release_workers, released)


def _batches(loader: DataLoader, release) -> Iterator[DetectionBatch]:
    """The loader's batches, a worker's failure raised here; workers may be ended by a signal once done."""
    atexit.register(release)
    try:
        for batch in loader:
            if isinstance(batch, _Failure):
                raise SpecError(batch.message)
            yield batch
    finally:
        release()
        atexit.unregister(release)


class _EpochSampler:
    """Batches of ``_Request``s for one rank, epoch after epoch, from (``epoch``, ``batch``)."""

    def __init__(self, loader: "DetectionTrainLoader", epoch: int, batch: int):
        self.loader, self.epoch, self.batch = loader, epoch, batch

    def __iter__(self) -> Iterator[List[_Request]]:
        epoch, batch = self.epoch, self.batch
        while True:
            permutation, flips = self.loader.epoch_draws(epoch)
            for step in range(batch, self.loader.steps_per_epoch):
                yield self.loader.requests(permutation, flips, epoch, step)
            epoch, batch = epoch + 1, 0


class DetectionTrainLoader:
    """Endless training batches of the concatenated sources: ``steps_per_epoch`` per rank per epoch (the
    epoch's last incomplete global batch dropped), each image flipped with ``hflip_probability``, each batch at
    a size drawn from ``multi_scales`` (``spatial_size`` when empty). ``state_dict()`` is the next batch."""

    def __init__(
        self,
        sources: List[CocoDetectionSource],
        *,
        batch_size: int,
        workers: int,
        spatial_size: Tuple[int, int],
        multi_scales: Sequence,
        hflip_probability: float,
        norm_mean,
        norm_std,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.dataset = _DetectionImages(sources, norm_mean, norm_std)
        self.sources = list(sources)
        self.source_names = [source.name for source in sources]
        self.batch_size, self.workers, self.seed = int(batch_size), int(workers), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        if self.batch_size < 1:
            raise SpecError(f"dataset.batch_size={batch_size}: at least 1 image per process")
        self.scales = [_size(spatial_size, "dataset.augmentation.train_spatial_size")]
        if len(multi_scales):
            self.scales = [_size(s, f"dataset.augmentation.multi_scales[{i}]") for i, s in enumerate(multi_scales)]
        if not 0 <= hflip_probability <= 1:
            raise SpecError(f"dataset.augmentation.hflip_probability={hflip_probability}: a probability, 0..1")
        self.hflip_probability = float(hflip_probability)
        per_step = self.batch_size * self.world_size
        self.steps_per_epoch = len(self.dataset) // per_step
        if self.steps_per_epoch == 0:
            raise SpecError(
                f"dataset.train_data_sources: {len(self.dataset)} images ({', '.join(self.source_names)}) are too "
                f"few for one step of dataset.batch_size={self.batch_size} x {self.world_size} processes "
                f"= {per_step} images"
            )
        self.epoch = self.batch = 0

    def epoch_draws(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The epoch's permutation of the dataset (the same on every rank) and whether each dataset index is
        flipped."""
        permutation = torch.randperm(len(self.dataset), generator=_generator(self.seed, _PERMUTATION, epoch))
        flips = torch.rand(len(self.dataset), generator=_generator(self.seed, _FLIP, epoch)) < self.hflip_probability
        return permutation, flips

    def batch_spatial_size(self, epoch: int, batch: int) -> Tuple[int, int]:
        """Batch ``batch`` of ``epoch``'s (height, width): the same on every rank."""
        if len(self.scales) == 1:
            return self.scales[0]
        choice = torch.randint(len(self.scales), (), generator=_generator(self.seed, _SCALE, epoch, batch))
        return self.scales[int(choice)]

    def requests(self, permutation: torch.Tensor, flips: torch.Tensor, epoch: int, batch: int) -> List[_Request]:
        start = batch * self.batch_size * self.world_size + self.rank * self.batch_size
        size = self.batch_spatial_size(epoch, batch)
        indices = permutation[start : start + self.batch_size].tolist()
        return [_Request(index, bool(flips[index]), size) for index in indices]

    def __iter__(self) -> Iterator[DetectionBatch]:
        loader, release = _data_loader(
            self.dataset, _EpochSampler(self, self.epoch, self.batch), self.workers, self.seed
        )
        for batch in _batches(loader, release):
            self.batch += 1
            if self.batch == self.steps_per_epoch:
                self.epoch, self.batch = self.epoch + 1, 0
            batch.position = self.state_dict()
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue at ``state`` (a ``state_dict()``); ValueError if it is not one of this loader's."""
        if not isinstance(state, dict) or set(state) != {"epoch", "batch"}:
            raise ValueError(f"a detection loader state is {{'epoch': int, 'batch': int}}, not {state!r}")
        epoch, batch = state["epoch"], state["batch"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, batch)):
            raise ValueError(f"a detection loader state holds non-negative ints, not {state!r}")
        if batch >= self.steps_per_epoch:
            raise ValueError(
                f"loader state {state!r}: batch {batch} is past this epoch's {self.steps_per_epoch} batches "
                f"(batch size {self.batch_size} x {self.world_size} processes; did either change?)"
            )
        self.epoch, self.batch = epoch, batch


class _EvalSampler:
    def __init__(self, count: int, batch_size: int, size: Tuple[int, int]):
        self.count, self.batch_size, self.size = count, batch_size, size

    def __iter__(self) -> Iterator[List[_Request]]:
        for start in range(0, self.count, self.batch_size):
            yield [
                _Request(index, False, self.size) for index in range(start, min(start + self.batch_size, self.count))
            ]

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)


def detection_eval_batches(
    source: CocoDetectionSource,
    *,
    batch_size: int,
    workers: int,
    spatial_size: Tuple[int, int],
    norm_mean,
    norm_std,
) -> Iterator[DetectionBatch]:
    """Every image of ``source`` once, in id order, resized to ``spatial_size`` without augmentation; the last
    batch may be short."""
    dataset = _DetectionImages([source], norm_mean, norm_std)
    size = _size(spatial_size, "dataset.augmentation.eval_spatial_size")
    loader, release = _data_loader(dataset, _EvalSampler(len(dataset), int(batch_size), size), int(workers), 0)
    yield from _batches(loader, release)
