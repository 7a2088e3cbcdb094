"""Data sources: discovery of shards (or image files) and the per-pass split among readers.

Within one pass over a source, every reader (rank x lane) owns a disjoint set of *units*. A unit is a
shard, or, when a source has fewer shards than readers, one residue class of a shard's sample indices
(samples ``c, c+m, c+2m, ...``), so every reader has work and still reads disjoint samples. The units of a
pass are dealt out in an order seeded by (seed, source, pass): each pass reads the source in a new order.
"""

import glob
import logging
import math
import os
import random
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from radio.config.schema import TarDataSource, TrainDatasetConfig
from radio.data.shard_records import ShardReader
from radio.data.tar_reader import IMAGE_EXTENSIONS
from radio.errors import DataError

LOG = logging.getLogger("radio.data")
Unit = Tuple[int, int, int]  # (file index, residue, modulus): the file's samples with index % modulus == residue


@dataclass(frozen=True)
class Source:
    """One mixture source. ``files`` are relative to ``root``: tar shards, or single images for a folder."""

    name: str
    root: str
    kind: str  # "tar" | "folder"
    files: Tuple[str, ...]
    scale_factor: float = 1.0
    steps_per_epoch: Optional[int] = None
    samples_per_file: Optional[int] = None
    labels: Tuple[int, ...] = ()  # folder sources: class index per file (sorted class sub-folders)


def discover_tar_source(config: TarDataSource, field_path: str) -> Source:
    """Scan ``{root_dir}/**/*.tar`` (sorted). Raises ``DataError`` when the folder is missing or holds no
    shards (``radio data preview`` reads data without the path checks of ``radio/run/spec.py``)."""
    root = os.path.abspath(os.path.expanduser(str(config.root_dir)))
    if not os.path.isdir(root):
        raise DataError(f"{field_path}.root_dir: {config.root_dir!r} is not a directory")
    shards = sorted(glob.glob(os.path.join(root, "**", "*.tar"), recursive=True))
    if not shards:
        raise DataError(f"{field_path}.root_dir: no *.tar shards found under {root} (searched {root}/**/*.tar)")
    return Source(
        name=config.name or os.path.basename(root.rstrip(os.sep)),
        root=root,
        kind="tar",
        files=tuple(os.path.relpath(path, root) for path in shards),
        scale_factor=float(config.scale_factor),
        steps_per_epoch=config.steps_per_epoch,
        samples_per_file=config.samples_per_file,
    )


def discover_folder_source(images_dir: str, field_path: str) -> Source:
    """All images under ``images_dir``; first-level sub-folders are classes (sorted names -> 0, 1, ...)."""
    root = os.path.abspath(os.path.expanduser(images_dir))
    if not os.path.isdir(root):
        raise DataError(f"{field_path}: {images_dir!r} is not a directory")
    files = sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
        if name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(f"{field_path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    class_names = sorted({path.split(os.sep, 1)[0] for path in files if os.sep in path})
    class_index = {name: index for index, name in enumerate(class_names)}
    labels = tuple(class_index.get(path.split(os.sep, 1)[0], -1) if os.sep in path else -1 for path in files)
    return Source(os.path.basename(root), root, "folder", tuple(files), labels=labels)


def build_sources(config: TrainDatasetConfig) -> List[Source]:
    """Every training source in spec order (tar sources, then ``images_dir``; spec validation requires at
    least one); names made unique."""
    sources = [
        discover_tar_source(source, f"dataset.train_dataset.tar_data_sources[{index}]")
        for index, source in enumerate(config.tar_data_sources)
    ]
    if config.images_dir:
        sources.append(discover_folder_source(config.images_dir, "dataset.train_dataset.images_dir"))
    seen = set()
    unique = []
    for index, source in enumerate(sources):
        name = source.name if source.name not in seen else f"{source.name}_{index}"
        seen.add(name)
        unique.append(source if name == source.name else replace(source, name=name))
    return unique


def reader_units(
    num_files: int,
    num_readers: int,
    reader: int,
    seed: int,
    source_index: int,
    pass_index: int,
    split_files: bool = True,
) -> List[Unit]:
    """The units reader ``reader`` of ``num_readers`` reads in pass ``pass_index``, in reading order.

    Across all readers the units of one pass cover every file's samples exactly once. ``split_files``:
    files hold many samples (shards) and may be split into residue classes.
    """
    modulus = max(1, math.ceil(num_readers / num_files)) if split_files else 1
    units = [(file_index, residue, modulus) for file_index in range(num_files) for residue in range(modulus)]
    random.Random(f"radio-units/{seed}/{source_index}/{pass_index}").shuffle(units)
    return units[reader::num_readers]


def estimate_samples(source: Source) -> int:
    """Samples in a source: file count for folders, ``samples_per_file`` x shards when given, else counted
    from tar headers (data is not read)."""
    if source.kind == "folder":
        return len(source.files)
    if source.samples_per_file:
        return int(source.samples_per_file) * len(source.files)
    LOG.warning(
        "source %r sets neither steps_per_epoch nor samples_per_file: counting its samples from every "
        "shard's tar headers (set one of them to skip this pass)",
        source.name,
    )
    # Damaged shards are reported when the lanes read them; here they count the samples they hold.
    shards = (ShardReader(os.path.join(source.root, relative), lambda problem: None) for relative in source.files)
    return max(sum(shard.count() for shard in shards), 1)
