"""The mixture guarantee: every prefix of the emitted sequence is within 2 samples of the requested share."""

import json
import random

import pytest

from radio.data.loader import TrainLoader
from radio.data.mixture import MixtureEmitter
from tests.data.data_helpers import make_cfg, small_plan, take

WEIGHTS = [[2, 1], [0.9, 0.07, 0.03], [1, 1, 1, 1, 1], [5, 3, 1, 0.5, 0.01], [0.3, 0.3, 0.4], [1e-3, 1.0]]


def max_prefix_deviation(sequence, shares):
    counts = [0] * len(shares)
    worst = 0.0
    for n, source in enumerate(sequence, start=1):
        counts[source] += 1
        worst = max(worst, max(abs(c - n * s) for c, s in zip(counts, shares)))
    return worst


@pytest.mark.parametrize(
    "weights", WEIGHTS + [[random.Random(i).uniform(0.01, 10) for _ in range(1 + i % 6)] for i in range(6)]
)
def test_every_prefix_within_two_samples(weights):
    emitter = MixtureEmitter(weights)
    sequence = emitter.take(50_000)
    assert max_prefix_deviation(sequence, emitter.shares) <= 2.0


def test_state_round_trip_continues_the_sequence():
    emitter = MixtureEmitter([0.9, 0.07, 0.03])
    emitter.take(777)
    state = json.loads(json.dumps(emitter.state_dict()))
    expected = emitter.take(500)
    resumed = MixtureEmitter([0.9, 0.07, 0.03])
    resumed.load_state_dict(state)
    assert resumed.take(500) == expected


def test_restart_under_new_weights_continues_as_a_new_emitter():
    emitter = MixtureEmitter([2, 1])
    emitter.take(40)
    reweighted = MixtureEmitter([1, 3])
    reweighted.load_state_dict(emitter.state_dict())
    reweighted.restart()
    assert reweighted.take(500) == MixtureEmitter([1, 3]).take(500)
    assert reweighted.slot == 540


def test_rejects_non_positive_weights():
    with pytest.raises(ValueError, match="> 0"):
        MixtureEmitter([1.0, 0.0])


@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.parametrize("weights", [[2.0, 1.0], [0.9, 0.07, 0.03]])
@pytest.mark.parametrize("world_size,workers", [(1, 0), (2, 0), (3, 2)])
def test_loader_slots_follow_the_emitter(two_sources, weights, world_size, workers):
    """Interleaving every rank's batches in global slot order gives the emitter's sequence, so the prefix
    bound holds for the data the ranks actually train on, whatever the world size and worker count."""
    roots = list(two_sources) + [two_sources[0]] * (len(weights) - 2)
    # 4 per rank: not a multiple of [2, 1]'s period (3), so every rank's batch differs and a slot given to
    # the wrong rank, or read in the wrong order, changes the interleaved sequence.
    steps, batch_size = 6, 4
    per_rank = []
    for rank in range(world_size):
        cfg = make_cfg(roots, weights=weights, batch_size=batch_size, workers=workers)
        loader = TrainLoader(cfg, small_plan(), seed=5, rank=rank, world_size=world_size)
        per_rank.append([b.sources.tolist() for b in take(loader, steps)])
    sequence = [s for step in range(steps) for rank in range(world_size) for s in per_rank[rank][step]]
    emitter = MixtureEmitter(weights)
    assert sequence == emitter.take(len(sequence))
    assert max_prefix_deviation(sequence, emitter.shares) <= 2.0
