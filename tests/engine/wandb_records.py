"""Reads an offline W&B run file (``wandb/offline-run-*/run-<id>.wandb``) back, for tests.

wandb 0.31 ships no Python reader for it (its Go core writes the file; ``wandb sync`` only uploads), so
this decodes the layout that core writes: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
LevelDB-log blocks of 32 KiB whose chunks (7-byte header: checksum, length, type FULL/FIRST/MIDDLE/LAST)
carry serialized ``wandb.proto.wandb_internal_pb2.Record`` messages.
"""

import json
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterator, List

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B run file"
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        pending += data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@dataclass
class WandbRun:
    """What one run file holds: the run record, the history rows, the final summary and the files."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    tags: List[str] = field(default_factory=list)
    config: Dict[str, object] = field(default_factory=dict)
    history: List[Dict[str, object]] = field(default_factory=list)  # "/"-joined keys (images: "<tag>/_type")
    summary: Dict[str, object] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    exit_code: int = -1


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_run(path: str) -> WandbRun:
    run = WandbRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.tags = r.run_id, r.display_name, r.run_group, list(r.tags)
            run.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
