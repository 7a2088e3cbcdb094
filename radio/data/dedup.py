"""De-duplication keys, the SQLite key-count file, and ``data_weight_mode`` acceptance.

``radio shards stats ROOT...`` counts every sample's dedup key over all given roots and writes the counts
to ``{root}/dedup_counts.sqlite`` in each root. With a ``data_weight_mode`` other than ``none`` the loader
keeps a sample with probability ``w(count) / w(1)`` (``inv_frequency``: w = 1/c, ``inv_sq_frequency``:
1/c², ``inv_log_frequency``: 1/log(c+1); keys missing from the file count once), decided by a seeded hash
of the sample's identity and pass so the decision is the same on every run and every process.
"""

import hashlib
import math
import os
import sqlite3
from typing import Dict, Optional, Tuple

from radio.errors import DataError

_WEIGHTS = {
    "inv_frequency": lambda c: 1.0 / c,
    "inv_sq_frequency": lambda c: 1.0 / (c * c),
    "inv_log_frequency": lambda c: 1.0 / math.log(c + 1),
}
WEIGHT_MODES = ("none", *_WEIGHTS)  # the valid data_weight_mode values (spec validation checks against these)


# What `radio shards stats` writes into each root_dir for data_weight_mode.
DEDUP_COUNTS_FILE = "dedup_counts.sqlite"


def sidecar_key(meta: Optional[dict]) -> Optional[str]:
    """``sha256`` | ``md5`` | ``uid`` from the ``.json`` sidecar (the first present), else None."""
    for field in ("sha256", "md5", "uid"):
        if meta and meta.get(field) not in (None, ""):
            return f"{field}:{meta[field]}"
    return None


def image_key(image_bytes: bytes) -> str:
    return "sha256:" + hashlib.sha256(image_bytes).hexdigest()


def dedup_key(meta: Optional[dict], image_bytes: bytes) -> str:
    """The sidecar's key (``sidecar_key``), else the image bytes' sha256."""
    return sidecar_key(meta) or image_key(image_bytes)


def counts_path(root_dir: str) -> str:
    return os.path.join(root_dir, DEDUP_COUNTS_FILE)


def write_counts(path: str, counts: Dict[str, int]) -> None:
    """Write ``{dedup key: count}`` to a fresh SQLite file at ``path`` (atomically replaced)."""
    temporary = path + ".tmp"
    if os.path.exists(temporary):
        os.remove(temporary)
    with sqlite3.connect(temporary) as connection:
        connection.execute("CREATE TABLE counts (key TEXT PRIMARY KEY, count INTEGER NOT NULL)")
        connection.executemany("INSERT INTO counts VALUES (?, ?)", sorted(counts.items()))
    connection.close()
    os.replace(temporary, path)


class KeyCounts:
    """Read-only lookups in a counts file. Each process opens its own connection on first use: SQLite
    connections must not cross a fork or a pickle into DataLoader workers."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise DataError(
                f"data_weight_mode needs de-duplication counts, but {path} does not exist: "
                f"run `radio shards stats {os.path.dirname(path)}` (list every root that can share images)"
            )
        self.path = path
        self._connection: Optional[sqlite3.Connection] = None
        self._pid = 0

    def __getstate__(self):
        return {"path": self.path, "_connection": None, "_pid": 0}

    def count(self, key: str) -> int:
        if self._connection is None or self._pid != os.getpid():
            self._connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._pid = os.getpid()
        row = self._connection.execute("SELECT count FROM counts WHERE key = ?", (key,)).fetchone()
        return max(1, int(row[0])) if row else 1


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) that depends only on ``parts``."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class WeightedAcceptance:
    """Seeded per-sample acceptance that down-weights repeated images by their dedup-key count. ``mode``:
    a ``WEIGHT_MODES`` value other than ``none`` (spec validation has checked it)."""

    def __init__(self, mode: str, counts: KeyCounts, seed: int):
        self.weight = _WEIGHTS[mode]
        self.counts = counts
        self.seed = seed

    def keep_probability(self, key: str) -> float:
        return self.weight(self.counts.count(key)) / self.weight(1)

    def accept(self, key: str, identity: Tuple[object, ...]) -> bool:
        return unit_hash("radio-weight", self.seed, *identity) < self.keep_probability(key)
