"""Data problems said once per source and kind, with counts, instead of one log line per shard or sample.

The readers (``lanes.py``, in each DataLoader worker) note what they meet in a ``DataNotices``; every chunk a
worker yields carries a copy to the main process (``loader.py``), where a ``NoticeBoard`` merges the workers'
notices and says one line per (source, reason) when it first appears, and one more at the end of reading
with the total when more came after it. Only the first pass over the data is noted: in it each sample and
shard is read once, by one reader, so the counts are exact without passing sets of paths between processes
(the loader's counters count every read, in every pass).
"""

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

SAMPLES_PER_FILE_MISMATCH = "format/samples_per_file_mismatch"
NoticeKey = Tuple[str, str]  # (source name, reason)
MORE_FOLLOW = " (a total follows when reading ends if more come)"


@dataclass
class DataNotice:
    """One kind of problem of one source, as far as one process has met it. ``reason``: the counter name
    (``error/...``, ``format/...``); ``unit``: what ``count`` counts (sample, shard, file); ``example``: the
    first one met. Shard-size notices also keep the ``samples_per_file`` hint and the samples the shards held."""

    source: str
    reason: str
    unit: str
    count: int = 0
    example: str = ""
    expected: Optional[int] = None
    fewest: Optional[int] = None
    most: Optional[int] = None
    held: int = 0


class DataNotices:
    """What one reader process noted, per (source, reason)."""

    def __init__(self):
        self._notices: Dict[NoticeKey, DataNotice] = {}

    def note(self, source: str, reason: str, unit: str, example: str) -> None:
        notice = self._notices.setdefault((source, reason), DataNotice(source, reason, unit, example=example))
        notice.count += 1

    def note_shard_size(self, source: str, path: str, held: int, expected: int) -> None:
        """A shard holds ``held`` samples where the source's ``samples_per_file`` says ``expected``."""
        key = (source, SAMPLES_PER_FILE_MISMATCH)
        notice = self._notices.setdefault(key, DataNotice(source, key[1], "shard", example=path, expected=expected))
        notice.count += 1
        notice.held += held
        notice.fewest = held if notice.fewest is None else min(notice.fewest, held)
        notice.most = held if notice.most is None else max(notice.most, held)

    def snapshot(self) -> Dict[NoticeKey, DataNotice]:
        """A copy, for a chunk (the readers go on noting into this one)."""
        return {key: dataclasses.replace(notice) for key, notice in self._notices.items()}


def merge(parts: List[DataNotice]) -> DataNotice:
    """One source's notice of one reason over several processes (their shards and samples are disjoint)."""
    first = parts[0]
    merged = dataclasses.replace(first, count=sum(p.count for p in parts), held=sum(p.held for p in parts))
    sizes = [p for p in parts if p.fewest is not None]
    if sizes:
        merged.fewest, merged.most = min(p.fewest for p in sizes), max(p.most for p in sizes)
    return merged


class NoticeBoard:
    """One rank's main process's view of its workers' notices. Every rank says its own (ranks read disjoint
    parts of the data), tagged with the rank when there are several; ``say`` gets each line (default: a
    warning of the ``radio.data`` logger)."""

    def __init__(self, rank: int = 0, world_size: int = 1, say: Optional[Callable[[str], None]] = None):
        self.say = say or logging.getLogger("radio.data").warning
        self.prefix = f"[rank {rank}] " if world_size > 1 else ""
        self._latest: Dict[int, Dict[NoticeKey, DataNotice]] = {}  # per worker: its newest snapshot
        self._said: Dict[NoticeKey, int] = {}  # the count last said

    def update(self, worker: int, notices: Dict[NoticeKey, DataNotice]) -> None:
        if not notices:
            return
        self._latest[worker] = notices
        for key in sorted(notices):
            if key not in self._said:
                notice = self._merged(key)
                self._said[key] = notice.count
                self.say(self.prefix + describe(notice, final=False))

    def close(self) -> None:
        """Say the total of every notice that grew after its first line."""
        for key, said in sorted(self._said.items()):
            notice = self._merged(key)
            if notice.count > said:
                self._said[key] = notice.count
                self.say(self.prefix + describe(notice, final=True))

    def _merged(self, key: NoticeKey) -> DataNotice:
        return merge([notices[key] for _, notices in sorted(self._latest.items()) if key in notices])


def describe(notice: DataNotice, *, final: bool) -> str:
    """The line for ``notice``: its first sight (``final`` False: the count so far) or its total."""
    plural = "" if notice.count == 1 else "s"
    count = f"{notice.count} {notice.unit}{plural}" + ("" if final else " so far")
    if notice.reason == SAMPLES_PER_FILE_MISMATCH:
        return _describe_shard_sizes(notice, count, final)
    what = "skipped" if notice.reason.startswith("error/") else "read as said"
    line = f"source {notice.source!r}: {notice.reason}: {count}, e.g. {notice.example}; {what}"
    return line + f", counted as data/{notice.reason} in metrics.jsonl" + ("" if final else MORE_FOLLOW)


def _describe_shard_sizes(notice: DataNotice, count: str, final: bool) -> str:
    expected, fewest, most = notice.expected, notice.fewest, notice.most
    if most < expected:
        relation = "fewer samples than"
    elif fewest > expected:
        relation = "more samples than"
    else:
        relation = "other sample counts than"
    held = str(fewest) if fewest == most else f"{fewest}-{most}"
    verb = "holds" if notice.count == 1 else "hold"
    line = (
        f"source {notice.source!r}: {count} {verb} {relation} samples_per_file={expected} says ({held} "
        f"{'' if notice.count == 1 else 'each, '}e.g. {notice.example})"
    )
    if notice.count == 1 and most < expected:
        advice = "a shard writer's last shard often holds fewer; nothing to fix if this is it"
    else:
        advice = (
            f"set samples_per_file to about {round(notice.held / notice.count)}, or remove it to count the "
            "samples from the shards' tar headers at start-up (it sizes the epoch where steps_per_epoch is unset)"
        )
    return line + f"; {advice}" + ("" if final else MORE_FOLLOW)
