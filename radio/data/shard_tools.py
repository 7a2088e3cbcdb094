"""Shard maintenance: pack an image folder into shards, and count de-duplication keys over shards."""

import glob
import json
import os
from typing import Callable, Dict, Iterator, List, Sequence

from radio.data.dedup import counts_path, image_key, sidecar_key, write_counts
from radio.data.problem_tally import ProblemTally
from radio.data.shard_records import ShardProblem, ShardReader
from radio.data.sources import discover_folder_source
from radio.errors import DataError


def write_folder_shards(
    images_dir: str, out_dir: str, *, maxcount: int = 10000, prefix: str = "shard", with_labels: bool = True
) -> List[str]:
    """Pack every image under ``images_dir`` (sorted) into ``{out_dir}/{prefix}-%06d.tar`` with
    ``webdataset.ShardWriter``, ``maxcount`` samples per shard. Keys are ``%08d`` indices; the original
    relative path goes into a ``.json`` sidecar; with class sub-folders and ``with_labels`` a ``.cls``
    (sorted class index) is written too. Returns the shard paths."""
    import webdataset as wds

    source = discover_folder_source(images_dir, "images_dir")
    os.makedirs(out_dir, exist_ok=True)
    pattern = os.path.join(out_dir, f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0) as sink:
        for index, (relative, label) in enumerate(zip(source.files, source.labels)):
            with open(os.path.join(source.root, relative), "rb") as stream:
                data = stream.read()
            extension = relative.rpartition(".")[2].lower()
            sample = {"__key__": f"{index:08d}", extension: data, "json": json.dumps({"path": relative}).encode()}
            if with_labels and label >= 0:
                sample["cls"] = str(label).encode()
            sink.write(sample)
    return sorted(glob.glob(os.path.join(out_dir, f"{prefix}-*.tar")))


def iter_dedup_keys(root: str, report: Callable[[ShardProblem], None]) -> Iterator[str]:
    """The dedup key of every sample with an image under ``root``; bad data goes to ``report`` and is
    skipped (damaged shards: what is readable)."""
    shards = sorted(glob.glob(os.path.join(root, "**", "*.tar"), recursive=True))
    if not shards:
        raise DataError(f"radio shards stats: no *.tar shards under {root}")
    for path in shards:
        for record in ShardReader(path, report):
            if record.has_image:  # the image bytes are read only when the sidecar names no key
                yield sidecar_key(record.meta) or image_key(record.read_image())


def write_dedup_counts(roots: Sequence[str]) -> Dict[str, int]:
    """Count dedup keys over all ``roots`` together (duplicates across sources count too) and write the
    counts to ``{root}/dedup_counts.sqlite`` in every root. Bad data is said once the shards are read: one
    line per root and kind of problem (``problem_tally.py``). Returns the counts."""
    counts: Dict[str, int] = {}
    tally = ProblemTally()
    for root in roots:
        for key in iter_dedup_keys(os.path.abspath(root), tally.shard_reporter(root)):
            counts[key] = counts.get(key, 0) + 1
    tally.close("the samples that could be read are counted")
    for root in roots:
        write_counts(counts_path(root), counts)
    return counts
