"""Shard maintenance: pack an image folder into shards, and count de-duplication keys over shards."""

import glob
import json
import logging
import os
from typing import Dict, Iterator, List, Sequence

from radio.data.dedup import counts_path, dedup_key, parse_sidecar, write_counts
from radio.data.sources import discover_folder_source
from radio.data.tar_reader import TarFormatError, image_extension, iter_samples, open_shard, read_member
from radio.errors import DataError

LOG = logging.getLogger("radio.data")


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


def iter_dedup_keys(root: str) -> Iterator[str]:
    """The dedup key of every sample with an image under ``root`` (damaged shards: what is readable)."""
    shards = sorted(glob.glob(os.path.join(root, "**", "*.tar"), recursive=True))
    if not shards:
        raise DataError(f"radio shards stats: no *.tar shards under {root}")
    for path in shards:
        try:
            stream, size = open_shard(path)
        except OSError as error:
            LOG.warning("skipping unreadable shard %s: %s", path, error)
            continue
        with stream:
            try:
                for entry in iter_samples(stream, size):
                    extension = image_extension(list(entry.members))
                    if extension is None:
                        continue
                    meta = None
                    if "json" in entry.members:
                        try:
                            meta = parse_sidecar(read_member(stream, entry.members["json"]))
                        except (ValueError, UnicodeDecodeError):
                            meta = None
                    has_key = meta and any(meta.get(f) not in (None, "") for f in ("sha256", "md5", "uid"))
                    image = b"" if has_key else read_member(stream, entry.members[extension])
                    yield dedup_key(meta, image)
            except TarFormatError as error:
                LOG.warning("%s: %s; counted the samples before the damage", path, error)


def write_dedup_counts(roots: Sequence[str]) -> Dict[str, int]:
    """Count dedup keys over all ``roots`` together (duplicates across sources count too) and write the
    counts to ``{root}/dedup_counts.sqlite`` in every root. Returns the counts."""
    counts: Dict[str, int] = {}
    for root in roots:
        for key in iter_dedup_keys(os.path.abspath(root)):
            counts[key] = counts.get(key, 0) + 1
    for root in roots:
        write_counts(counts_path(root), counts)
    return counts
