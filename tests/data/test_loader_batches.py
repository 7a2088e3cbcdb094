"""The Batch contract the engine relies on: shapes, dtypes, per-step sizes, labels, counters."""

import pytest
import torch

from radio.data.loader import TrainLoader
from radio.data.views import ViewPlan, ViewSpec
from tests.data.data_helpers import make_cfg, take


@pytest.mark.slow  # DataLoader worker processes
def test_batches_follow_the_plan_and_carry_labels(two_sources):
    plan = ViewPlan(ViewSpec("student", 32, 16, {32: 1.0, 48: 1.0}), [ViewSpec("teacher", 40, 14)], seed=2)
    loader = TrainLoader(
        make_cfg(two_sources, weights=[1, 1], batch_size=6, workers=2), plan, seed=0, rank=0, world_size=1
    )
    assert loader.source_names == ["a", "b"]
    assert loader.steps_per_epoch == 10  # none given: one pass over the larger source (60 samples / 6)
    batches = take(loader, 6)
    assert {b.images.shape[-1] for b in batches} == {42, 48}  # teacher 40 -> 42 (patch 14) or student 48
    for step, batch in enumerate(batches):
        assert batch.step == step and batch.sizes == plan.sizes_for_step(step)
        assert batch.images.dtype == torch.uint8 and batch.images.shape == (
            6,
            3,
            plan.max_size(step),
            plan.max_size(step),
        )
        assert batch.sources.dtype == torch.int64 and batch.labels.dtype == torch.int64
        for source, label, key in zip(batch.sources.tolist(), batch.labels.tolist(), batch.keys):
            assert key.startswith("a-" if source == 0 else "b-")
            if source == 0:  # written with .cls
                assert 0 <= label < 10
            else:
                assert label == -1
    assert batches[-1].counters["read/samples"] == 36
