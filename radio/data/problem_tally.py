"""Bad data met by the tools that read shards outside training (``radio shards stats``, the eval image
reader ``radio/eval/images.py``), said once at the end of the read: one line per (root, reason) with a count
and the first example, then the total, where one warning per bad sample would bury the tool's own output.

Training says the same problems as it meets them (``notices.py`` ``NoticeBoard``); both collect them in a
``DataNotices``.
"""

import logging
from typing import Callable, Optional, Set, Tuple

from radio.data.notices import DataNotices
from radio.data.shard_records import ShardProblem


class ProblemTally:
    """The problems of one read, per (root, reason). ``say`` gets each line at ``close`` (default: a warning
    of the ``radio.data`` logger)."""

    def __init__(self, say: Optional[Callable[[str], None]] = None):
        self.say = say or logging.getLogger("radio.data").warning
        self.notices = DataNotices()

    def shard_reporter(self, root: str) -> Callable[[ShardProblem], None]:
        """A ``ShardReader`` ``report`` for the shards under ``root`` (``skipped/`` ones are expected: not noted)."""

        def report(problem: ShardProblem) -> None:
            if not problem.reason.startswith("skipped/"):
                where = f"{problem.path}{f' sample {problem.key!r}' if problem.key else ''}"
                unit = "sample" if problem.key else "shard"
                self.note(root, problem.reason, unit, f"{where}{f' ({problem.detail})' if problem.detail else ''}")

        return report

    def note(self, root: str, reason: str, unit: str, example: str) -> None:
        """One problem (``unit``: what it concerns, sample, shard or file; ``example``: where, and what)."""
        self.notices.note(root, reason, unit, example)

    def close(self, outcome: str, said: Optional[Set[Tuple[str, str, int]]] = None) -> int:
        """Says the lines and the total (nothing when there were no problems); ``outcome``: what the tool did
        with the rest, for the total's line. ``said``: the (root, reason, count) said by earlier reads of the
        same data, not said again (and added to). Returns the number of problems."""
        said = set() if said is None else said
        notices = self.notices.snapshot()
        new = 0
        for key in sorted(notices):
            notice = notices[key]
            if (notice.source, notice.reason, notice.count) in said:
                continue
            said.add((notice.source, notice.reason, notice.count))
            new += 1
            plural = "" if notice.count == 1 else "s"
            self.say(f"{notice.source}: {notice.reason}: {notice.count} {notice.unit}{plural}, e.g. {notice.example}")
        total = sum(notice.count for notice in notices.values())
        if new:
            kinds = len({reason for _, reason in notices})
            roots = len({root for root, _ in notices})
            self.say(
                f"bad data: {total} problem{'' if total == 1 else 's'} of {kinds} kind{'' if kinds == 1 else 's'} "
                f"under {roots} folder{'' if roots == 1 else 's'} (above); {outcome}"
            )
        return total
