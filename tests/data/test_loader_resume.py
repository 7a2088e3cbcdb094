"""Resume and determinism: the read order is a pure function of (seed, step), whatever the worker count,
and a restored state continues exactly, seeking instead of re-reading."""

import json

import pytest
import torch

from radio.data.loader import TrainLoader
from radio.data.mixture import MixtureEmitter
from radio.errors import DataError
from tests.data.data_helpers import make_cfg, small_plan, take


def keys_of(batches):
    return [b.keys for b in batches]


@pytest.mark.slow  # DataLoader worker processes
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


@pytest.mark.slow  # DataLoader worker processes
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


def source_keys(batches, source):
    return [key for b in batches for key, s in zip(b.keys, b.sources.tolist()) if s == source]


def test_resume_with_changed_weights_follows_the_new_mixture(two_sources, capsys):
    """A resumed run whose spec changed a scale_factor says so and emits the new mixture exactly from the
    resume step, while every source goes on from where it stopped reading."""
    old, new = [2, 1], [1, 3]
    first = TrainLoader(make_cfg(two_sources, weights=old), small_plan(), seed=7, rank=0, world_size=1)
    before = take(first, 10)
    state = json.loads(json.dumps(first.state_dict()))
    TrainLoader(make_cfg(two_sources, weights=old), small_plan(), seed=7, rank=0, world_size=1).load_state_dict(state)
    assert capsys.readouterr().out == ""  # unchanged weights: nothing to say

    resumed = TrainLoader(make_cfg(two_sources, weights=new), small_plan(), seed=7, rank=0, world_size=1)
    resumed.load_state_dict(state)
    note = capsys.readouterr().out
    assert note.count("\n") == 1 and "'a' 2.0 -> 1.0, 'b' 1.0 -> 3.0" in note
    assert "mixture restarts from the new weights at step 10" in note
    after = take(resumed, 12)
    sequence = [s for b in after for s in b.sources.tolist()]
    assert sequence == MixtureEmitter(new).take(len(sequence))
    assert resumed.state_dict()["weights"] == new
    # 45 steps at [2, 1]: more samples of each source than the resumed run reads from it.
    uninterrupted = take(
        TrainLoader(make_cfg(two_sources, weights=old), small_plan(), seed=7, rank=0, world_size=1), 45
    )
    for source in (0, 1):
        read = source_keys(before + after, source)
        assert read == source_keys(uninterrupted, source)[: len(read)]


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


@pytest.mark.slow  # DataLoader worker processes
def test_state_is_small_json(two_sources):
    loader = TrainLoader(make_cfg(two_sources, workers=2), small_plan(), seed=1, rank=0, world_size=1)
    take(loader, 5)
    assert len(json.dumps(loader.state_dict())) < 20_000
