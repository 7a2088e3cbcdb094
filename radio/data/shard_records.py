"""A shard's samples as records (key, image, ``.json`` sidecar, ``.cls`` label): the one reader of tar samples.

The training lanes (``lanes.py``), sample counting (``sources.py``), ``radio shards stats``
(``shard_tools.py``) and the eval image reader (``radio/eval/images.py``) all read shards through
``ShardReader``. Bad data never raises: each problem goes to the caller's ``report`` as a ``ShardProblem``
whose ``reason`` is a counter name, and reading goes on (damage ends the shard early). The caller decides
what a problem costs: the training loader counts it against ``dataset.max_error_rate``, the tools tally it
(``problem_tally.py``: one line per folder and reason).
"""

import json
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Optional, Set, Tuple

from radio.data.tar_reader import (
    Member,
    SampleEntry,
    TarFormatError,
    image_extension,
    iter_samples,
    open_shard,
    read_member,
)

# What a ShardProblem affects (its ``scope``):
REST_OF_SHARD = "rest_of_shard"  # the shard cannot be read, or nothing after its damage can
LAYOUT = "layout"  # a quirk of the archive's layout, met by every reader of the shard whatever samples it owns
SAMPLE = "sample"  # one sample read into a record: its image or a sidecar


@dataclass(frozen=True)
class ShardProblem:
    reason: str  # counter name: ``error/...``, ``format/...`` or ``skipped/no_image``
    path: str  # the shard
    key: str  # the sample's key; "" for the shard itself
    detail: str
    scope: str  # REST_OF_SHARD | LAYOUT | SAMPLE

    def __str__(self) -> str:
        sample = f" sample {self.key!r}" if self.key else ""
        return f"{self.reason}: {self.path}{sample}{f' ({self.detail})' if self.detail else ''}"


@dataclass
class ShardRecord:
    """One sample of a shard. ``meta``: its ``.json`` sidecar (None when absent or unreadable); ``label``:
    its ``.cls`` class index (-1 when absent or unreadable)."""

    key: str
    meta: Optional[dict]
    label: int
    image_member: Optional[Member]
    stream: BinaryIO = field(repr=False)

    @property
    def has_image(self) -> bool:
        return self.image_member is not None

    def read_image(self) -> Optional[bytes]:
        """The image member's bytes (None: the sample has none); valid only while its shard is being read."""
        return None if self.image_member is None else read_member(self.stream, self.image_member)


class ShardReader:
    """The samples of shard ``path`` as ``ShardRecord``s, in archive order, from resume point (``offset``,
    ``index``) on.

    Only samples whose index is ``residue`` modulo ``modulus`` become records; the others' headers are still
    read, for the resume point and the layout checks. ``offset`` and ``index`` always point just past the
    last sample seen, where a resumed reader starts; ``read_to_end`` turns True once the whole shard was read
    without damage.
    """

    def __init__(
        self,
        path: str,
        report: Callable[[ShardProblem], None],
        *,
        offset: int = 0,
        index: int = 0,
        residue: int = 0,
        modulus: int = 1,
    ):
        self.path, self.report = path, report
        self.offset, self.index = offset, index
        self.residue, self.modulus = residue, modulus
        self.read_to_end = False

    def __iter__(self) -> Iterator[ShardRecord]:
        for stream, entry in self._entries():
            if entry.index % self.modulus == self.residue:
                yield self._record(stream, entry)

    def count(self) -> int:
        """Samples from the resume point to the end of the shard (or its damage), from the headers only."""
        start = self.index
        for _ in self._entries():
            pass
        return self.index - start

    def _entries(self) -> Iterator[Tuple[BinaryIO, SampleEntry]]:
        try:
            stream, file_size = open_shard(self.path)
        except OSError as error:
            self._report("error/unreadable_tar", "", str(error), REST_OF_SHARD)
            return
        keys_seen: Set[str] = set()
        with stream:
            try:
                for entry in iter_samples(stream, file_size, self.offset, self.index):
                    self.offset, self.index = entry.end_offset, entry.index + 1
                    self._check_layout(entry, keys_seen)
                    yield stream, entry
            except TarFormatError as error:
                self._report(error.reason, "", f"{error}; the rest of the shard is skipped", REST_OF_SHARD)
                return
        self.read_to_end = True

    def _check_layout(self, entry: SampleEntry, keys_seen: Set[str]) -> None:
        if entry.key in keys_seen:
            detail = "key reappears non-consecutively; read as a separate sample"
            self._report("format/repeated_key", entry.key, detail, LAYOUT)
        keys_seen.add(entry.key)
        if entry.duplicate_members:
            detail = "an extension appears twice in one sample; the first is used"
            self._report("format/duplicate_member", entry.key, detail, LAYOUT)

    def _record(self, stream: BinaryIO, entry: SampleEntry) -> ShardRecord:
        meta = self._sidecar(stream, entry)
        label = self._class_label(stream, entry)
        image = image_extension(list(entry.members))
        if image is None:
            self._report("skipped/no_image", entry.key, "", SAMPLE)
        return ShardRecord(entry.key, meta, label, entry.members[image] if image else None, stream)

    def _sidecar(self, stream: BinaryIO, entry: SampleEntry) -> Optional[dict]:
        if "json" not in entry.members:
            return None
        data = read_member(stream, entry.members["json"])
        try:
            return _parse_sidecar(data)
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            reason = "error/empty_member" if not data else "error/bad_json"
            self._report(reason, entry.key, f"json sidecar ignored: {error}", SAMPLE)
            return None

    def _class_label(self, stream: BinaryIO, entry: SampleEntry) -> int:
        if "cls" not in entry.members:
            return -1
        text = read_member(stream, entry.members["cls"])
        try:
            return int(text.decode("ascii").strip())
        except ValueError:
            self._report("error/bad_cls", entry.key, f"not an integer: {text[:20]!r}", SAMPLE)
            return -1

    def _report(self, reason: str, key: str, detail: str, scope: str) -> None:
        self.report(ShardProblem(reason, self.path, key, detail, scope))


def _parse_sidecar(data: bytes) -> dict:
    meta = json.loads(data.decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError("sidecar is not a JSON object")
    return meta
