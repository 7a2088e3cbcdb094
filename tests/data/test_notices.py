"""Data problems reach the console as one line per source and reason, with counts, whatever the number of
shards, samples, passes and DataLoader workers."""

import logging

import pytest

from radio.data.loader import TrainLoader
from radio.data.notices import DataNotices, NoticeBoard
from tests.data.data_helpers import make_cfg, small_plan, take


def test_workers_notices_are_merged_into_one_line_and_one_total():
    said = []
    board = NoticeBoard(say=said.append)
    first, second = DataNotices(), DataNotices()
    first.note_shard_size("x", "/d/x-0.tar", 17, 10000)
    first.note_shard_size("x", "/d/x-1.tar", 18, 10000)
    board.update(0, first.snapshot())
    board.update(0, first.snapshot())  # the same worker's next chunk: nothing new
    second.note_shard_size("x", "/d/x-2.tar", 20, 10000)
    board.update(1, second.snapshot())  # another worker: merged, not said again
    assert said == [
        "source 'x': 2 shards so far hold fewer samples than samples_per_file=10000 says (17-18 each, e.g. "
        "/d/x-0.tar); set samples_per_file to about 18, or remove it to count the samples from the shards' tar "
        "headers at start-up (it sizes the epoch where steps_per_epoch is unset) (a total follows when reading "
        "ends if more come)"
    ]
    board.close()
    assert len(said) == 2 and said[1].startswith(
        "source 'x': 3 shards hold fewer samples than samples_per_file=10000 says (17-20 each, e.g. /d/x-0.tar)"
    )
    board.close()
    assert len(said) == 2  # a total is said once


def test_a_total_is_said_only_when_more_came_and_ranks_are_named():
    said = []
    board = NoticeBoard(rank=1, world_size=2, say=said.append)
    notices = DataNotices()
    notices.note("y", "error/corrupt_image", "sample", "/d/y.tar sample 'k'")
    board.update(0, notices.snapshot())
    board.close()
    assert len(said) == 1 and said[0].startswith("[rank 1] source 'y': error/corrupt_image: 1 sample so far, e.g. ")


def test_one_short_shard_is_not_advice_to_change_the_hint():
    said = []
    board = NoticeBoard(say=said.append)
    notices = DataNotices()
    notices.note_shard_size("x", "/d/x-9.tar", 3, 100)
    board.update(0, notices.snapshot())
    assert "last shard often holds fewer" in said[0] and "set samples_per_file" not in said[0]


@pytest.mark.slow  # DataLoader worker processes
def test_two_workers_say_a_wrong_hint_once(two_sources, caplog):
    cfg = make_cfg([two_sources[1]], samples_per_file=7, workers=2)  # 3 shards of 10 samples
    loader = TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        counters = take(loader, 30)[-1].counters  # several passes
    said = [r.getMessage() for r in caplog.records if "samples_per_file" in r.getMessage()]
    assert 1 <= len(said) <= 2, said  # the first sight, and a total if it grew after it
    assert said[-1].startswith("source 'b': 3 shards") and "(10 each" in said[-1]
    assert counters["format/samples_per_file_mismatch"] == 3
