"""Resume and determinism: the read order is a pure function of (seed, step), whatever the worker count,
and a restored state continues exactly, seeking instead of re-reading."""

import json

import pytest
import torch

from tests.data.data_helpers import make_cfg, small_plan, take
from radio.data.loader import TrainLoader
from radio.errors import DataError


def keys_of(batches):
    return [b.keys for b in batches]


def test_worker_count_changes_who_reads_not_what(two_sources):
    """Same keys, sources, labels and pixels with 0 and 2 worker processes."""
    runs = []
    for workers in (0, 2):
        loader = TrainLoader(
            make_cfg(two_sources, weights=[2, 1], workers=workers), small_plan(), seed=3, rank=0, world_size=1
        )
        runs.append(take(loader, 8))
    for a, b in zip(*runs):
        assert a.keys == b.keys and a.step == b.step
        assert torch.equal(a.sources, b.sources) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, b.images)


def test_seed_changes_the_order(two_sources):
    orders = [
        keys_of(take(TrainLoader(make_cfg(two_sources), small_plan(), seed=s, rank=0, world_size=1), 4)) for s in (0, 1)
    ]
    assert orders[0] != orders[1]


@pytest.mark.parametrize("saved_workers,resumed_workers", [(0, 0), (2, 0), (0, 2)])
def test_resume_yields_the_uninterrupted_keys_without_rereading(two_sources, saved_workers, resumed_workers):
    cfg = make_cfg(two_sources, weights=[2, 1], workers=saved_workers)
    # 25 steps x 4 samples: source b (30 images) and a (60) both start new passes on the way.
    uninterrupted = take(TrainLoader(cfg, small_plan(), seed=7, rank=0, world_size=1), 25)

    first = TrainLoader(cfg, small_plan(), seed=7, rank=0, world_size=1)
    take(first, 10)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert state["step"] == 10

    resumed = TrainLoader(
        make_cfg(two_sources, weights=[2, 1], workers=resumed_workers), small_plan(), seed=7, rank=0, world_size=1
    )
    resumed.load_state_dict(state)
    continued = take(resumed, 15)
    assert [b.step for b in continued] == list(range(10, 25))
    assert keys_of(continued) == keys_of(uninterrupted[10:])
    assert all(torch.equal(a.images, b.images) for a, b in zip(continued, uninterrupted[10:]))
    # Counters carry over and no earlier sample is read again: reads equal the uninterrupted run's.
    assert continued[-1].counters == uninterrupted[-1].counters


def test_breaking_and_iterating_again_continues(two_sources):
    loader = TrainLoader(make_cfg(two_sources), small_plan(), seed=1, rank=0, world_size=1)
    reference = keys_of(take(TrainLoader(make_cfg(two_sources), small_plan(), seed=1, rank=0, world_size=1), 6))
    assert keys_of(take(loader, 2) + take(loader, 4)) == reference


def test_state_from_another_rank_or_layout_is_refused(two_sources):
    saved = TrainLoader(make_cfg(two_sources), small_plan(), seed=1, rank=1, world_size=2).state_dict()
    other_rank = TrainLoader(make_cfg(two_sources), small_plan(), seed=1, rank=0, world_size=2)
    with pytest.raises(DataError, match="rank"):
        other_rank.load_state_dict(saved)
    other_batch = TrainLoader(make_cfg(two_sources, batch_size=8), small_plan(), seed=1, rank=1, world_size=2)
    with pytest.raises(DataError, match="batch_size"):
        other_batch.load_state_dict(saved)


def test_state_is_small_json(two_sources):
    loader = TrainLoader(make_cfg(two_sources, workers=2), small_plan(), seed=1, rank=0, world_size=1)
    take(loader, 5)
    assert len(json.dumps(loader.state_dict())) < 20_000
