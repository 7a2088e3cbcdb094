"""Lane readers: one reader's share of one source, read pass after pass, returning usable samples.

A rank reads each source through ``lanes_for_source`` lanes; the n-th sample a rank takes from a source
comes from lane ``n % lanes``. The lane count depends on the data and the world size only, so the number of
DataLoader workers decides which process hosts a lane, never which sample lands in which slot. A lane's
position (pass, unit, byte offset, sample index) is a handful of integers, and resuming seeks straight to it.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, List, Optional, Tuple, TypeVar

from radio.data.crops import SampleDropped
from radio.data.dedup import WeightedAcceptance, dedup_key
from radio.data.notices import SAMPLES_PER_FILE_MISMATCH, DataNotices
from radio.data.shard_records import REST_OF_SHARD, SAMPLE, ShardProblem, ShardReader
from radio.data.sources import Source, reader_units
from radio.errors import DataError

MAX_LANES_PER_RANK = 48  # divisible by 1, 2, 3, 4, 6, 8, 12, 16, 24 workers: every worker hosts as many lanes
MIN_SAMPLES_PER_READER = 2  # per pass; fewer lanes for sources too small for that
MAX_UNUSABLE_IN_A_ROW = 2000  # a lane that reads this many unusable samples in a row: the source is unusable
MAX_EMPTY_PASSES_IN_A_ROW = 1000  # passes whose units held no sample at all (tiny or empty sources)
MIN_READS_FOR_ERROR_RATE = 100
T = TypeVar("T")


def lanes_for_source(source: Source, world_size: int, count_samples: Callable[[], int]) -> int:
    """Lanes per rank for ``source``: ``MAX_LANES_PER_RANK``, or fewer when the source is too small to give
    every reader ``MIN_SAMPLES_PER_READER`` samples per pass (a reader with nothing to read in a pass jumps
    to its next pass, and tiny sources would repeat samples early). Counting is only needed for sources
    with fewer shards than readers, which are small."""
    if source.kind == "tar" and len(source.files) >= world_size * MAX_LANES_PER_RANK:
        return MAX_LANES_PER_RANK
    samples = count_samples()
    return max(1, min(MAX_LANES_PER_RANK, samples // (MIN_SAMPLES_PER_READER * world_size)))


@dataclass
class RawSample:
    key: str  # "{file relative to the source root}:{sample key}", unique within the source
    path: str  # the shard (or image file)
    sample: str  # the key inside the shard ("" for an image file)
    image: Optional[bytes]
    meta: Optional[dict]
    label: int
    identity: Tuple[object, ...]  # (source index, file, key, pass): seeds per-sample decisions


@dataclass
class ReaderContext:
    """What all lanes of one process share: counters, the notices of bad data (said by the main process,
    ``notices.py``), and the error-rate check (each DataLoader worker checks the samples it read itself, so
    no process waits on another)."""

    max_error_rate: float = 0.05
    counters: Counter = field(default_factory=Counter)
    reads: Counter = field(default_factory=Counter)  # per source name: samples read
    errors: Counter = field(default_factory=Counter)  # per source name: samples lost to bad data
    notices: DataNotices = field(default_factory=DataNotices)

    def report(self, reason: str, source: str, unit: str, example: str, *, first_pass: bool) -> None:
        """Count ``reason``. Bad data (``error/``, ``format/``) met in the first pass over the data is also
        noted for ``source`` (``unit``: what it concerns; ``example``: where); filter drops are only counted."""
        self.counters[reason] += 1
        if first_pass and not reason.startswith(("dropped/", "skipped/")):
            self.notices.note(source, reason, unit, example)

    def record_error(self, source: str, whole_file: bool = False) -> None:
        """One sample (or, ``whole_file``, the unreadable rest of a file) lost to bad data."""
        self.errors[source] += 1
        self.reads[source] += int(whole_file)
        reads = self.reads[source]
        if reads >= MIN_READS_FOR_ERROR_RATE and self.errors[source] > self.max_error_rate * reads:
            raise DataError(
                f"source {source!r}: {self.errors[source]} of {reads} samples read were unreadable "
                f"(counters: {dict(sorted((k, v) for k, v in self.counters.items() if k.startswith('error/')))}), "
                f"above dataset.max_error_rate={self.max_error_rate}; fix the data or raise the bound"
            )


@dataclass
class LanePosition:
    pass_index: int = 0
    unit: int = 0  # index into the lane's unit list of the pass
    offset: int = 0  # byte offset of the next sample's first header in the unit's shard
    index: int = 0  # that sample's index in its shard
    unusable_in_a_row: int = 0
    empty_passes_in_a_row: int = 0
    read_in_pass: int = 0

    def to_list(self) -> List[int]:
        return [
            self.pass_index,
            self.unit,
            self.offset,
            self.index,
            self.unusable_in_a_row,
            self.empty_passes_in_a_row,
            self.read_in_pass,
        ]

    @classmethod
    def from_list(cls, values: List[int]) -> "LanePosition":
        return cls(*(int(v) for v in values))


class LaneReader:
    """Reader ``reader`` of ``num_readers`` over ``source``; ``next_sample`` returns the next usable one."""

    def __init__(
        self,
        source: Source,
        source_index: int,
        reader: int,
        num_readers: int,
        seed: int,
        context: ReaderContext,
        acceptance: Optional[WeightedAcceptance] = None,
        position: Optional[LanePosition] = None,
    ):
        self.source = source
        self.source_index = source_index
        self.reader = reader
        self.num_readers = num_readers
        self.seed = seed
        self.context = context
        self.acceptance = acceptance
        self.position = position or LanePosition()
        self._stream: Optional[Iterator[RawSample]] = None

    def next_sample(self, process: Callable[[bytes], T]) -> Tuple[RawSample, T]:
        """The next sample that has an image, passes weighting, and that ``process`` (decode, filter,
        crop) accepts; every other sample is counted by reason and skipped."""
        if self._stream is None:
            self._stream = self._raw_samples()
        position = self.position
        while True:
            raw = next(self._stream)
            if raw.image is None:  # the shard reader has counted it as skipped/no_image
                self._unusable()
                continue
            if self.acceptance is not None and not self.acceptance.accept(dedup_key(raw.meta, raw.image), raw.identity):
                self.context.counters["skipped/weighting"] += 1
                continue
            try:
                result = process(raw.image)
            except SampleDropped as dropped:
                self._report(dropped.reason, raw.path, raw.sample, str(dropped))
                if dropped.reason.startswith("error/"):
                    self.context.record_error(self.source.name)
                self._unusable()
                continue
            position.unusable_in_a_row = 0
            return raw, result

    def _unusable(self) -> None:
        self.position.unusable_in_a_row += 1
        if self.position.unusable_in_a_row >= MAX_UNUSABLE_IN_A_ROW:
            self._yields_nothing(f"the last {self.position.unusable_in_a_row} samples read were all unusable")

    def _yields_nothing(self, why: str) -> None:
        reasons = {k: v for k, v in sorted(self.context.counters.items()) if not k.startswith("read/")}
        raise DataError(
            f"source {self.source.name!r} ({self.source.root}) yields no usable samples: {why}; "
            f"counters so far: {reasons}. Check dataset.train_dataset.native_resolution_filter and the shards"
        )

    def _raw_samples(self) -> Iterator[RawSample]:
        position = self.position
        while True:
            units = reader_units(
                len(self.source.files),
                self.num_readers,
                self.reader,
                self.seed,
                self.source_index,
                position.pass_index,
                split_files=self.source.kind == "tar",
            )
            while position.unit < len(units):
                file_index, residue, modulus = units[position.unit]
                if self.source.kind == "tar":
                    yield from self._read_shard(file_index, residue, modulus)
                else:
                    yield from self._read_image_file(file_index)
                position.unit, position.offset, position.index = position.unit + 1, 0, 0
            position.empty_passes_in_a_row = 0 if position.read_in_pass else position.empty_passes_in_a_row + 1
            if position.empty_passes_in_a_row >= MAX_EMPTY_PASSES_IN_A_ROW:
                self._yields_nothing(f"{position.empty_passes_in_a_row} passes in a row found no sample")
            position.pass_index, position.unit, position.read_in_pass = position.pass_index + 1, 0, 0

    def _read_image_file(self, file_index: int) -> Iterator[RawSample]:
        relative = self.source.files[file_index]
        path = os.path.join(self.source.root, relative)
        identity = (self.source_index, relative, "", self.position.pass_index)
        self.position.read_in_pass += 1
        self.context.counters["read/samples"] += 1
        self.context.reads[self.source.name] += 1
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError as error:
            self._report("error/unreadable_file", path, "", str(error))
            self.context.record_error(self.source.name)
            return
        yield RawSample(relative, path, "", data, None, self.source.labels[file_index], identity)

    def _read_shard(self, file_index: int, residue: int, modulus: int) -> Iterator[RawSample]:
        relative = self.source.files[file_index]
        path = os.path.join(self.source.root, relative)
        position = self.position
        shard = ShardReader(
            path,
            partial(self._shard_problem, residue == 0),
            offset=position.offset,
            index=position.index,
            residue=residue,
            modulus=modulus,
        )
        for record in shard:
            position.offset, position.index = shard.offset, shard.index
            position.read_in_pass += 1
            self.context.counters["read/samples"] += 1
            self.context.reads[self.source.name] += 1
            identity = (self.source_index, relative, record.key, position.pass_index)
            image = record.read_image()
            yield RawSample(f"{relative}:{record.key}", path, record.key, image, record.meta, record.label, identity)
        if shard.read_to_end and residue == 0 and position.pass_index == 0:  # once per shard, like its notice
            self._check_samples_per_file(path, shard.index)

    def _shard_problem(self, counts_shard_problems: bool, problem: ShardProblem) -> None:
        # Every reader sharing a shard meets its damage and layout quirks; only the owner of residue 0
        # counts them, so each is counted once per pass.
        if problem.scope != SAMPLE and not counts_shard_problems:
            return
        self._report(problem.reason, problem.path, problem.key, problem.detail)
        if problem.scope == REST_OF_SHARD:
            self.context.record_error(self.source.name, whole_file=True)

    def _report(self, reason: str, path: str, key: str, detail: str) -> None:
        unit = "sample" if key else ("shard" if self.source.kind == "tar" else "file")
        example = f"{path}{f' sample {key!r}' if key else ''}{f' ({detail})' if detail else ''}"
        self.context.report(reason, self.source.name, unit, example, first_pass=self.position.pass_index == 0)

    def _check_samples_per_file(self, path: str, samples: int) -> None:
        hint = self.source.samples_per_file
        if hint and samples != hint:
            self.context.counters[SAMPLES_PER_FILE_MISMATCH] += 1
            self.context.notices.note_shard_size(self.source.name, path, samples, hint)
