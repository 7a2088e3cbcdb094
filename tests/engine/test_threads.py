"""Torch threads per process: the cores divided among the node's processes and their DataLoader workers,
unless the spec or OMP_NUM_THREADS says otherwise; oversubscription is said."""

import pytest

from radio.engine.threads import torch_threads


@pytest.mark.parametrize(
    "cores, processes, workers, expected",
    [(2, 1, 1, 1), (2, 1, 0, 2), (16, 1, 1, 8), (16, 2, 3, 2), (128, 8, 7, 2), (4, 8, 8, 1)],
)
def test_the_default_divides_the_cores(cores, processes, workers, expected):
    assert torch_threads(None, cores=cores, processes=processes, workers=workers, environment=None) == (expected, None)


def test_the_spec_then_the_environment_override_the_default():
    assert torch_threads(4, cores=16, processes=1, workers=1, environment="2") == (4, None)
    assert torch_threads(None, cores=16, processes=1, workers=1, environment="2") == (2, None)
    assert torch_threads(0, cores=16, processes=1, workers=1, environment="") == (8, None)


def test_an_oversubscribed_node_is_said_with_the_numbers_and_the_fields():
    threads, note = torch_threads(None, cores=2, processes=2, workers=2, environment="4")
    assert threads == 4
    assert "2 process(es) x (4 torch threads from OMP_NUM_THREADS + 2 DataLoader workers) = 12" in note
    assert "2 cores" in note and "dataset.workers" in note
    _, note = torch_threads(3, cores=2, processes=1, workers=0, environment=None)
    assert "train.torch_threads" in note
