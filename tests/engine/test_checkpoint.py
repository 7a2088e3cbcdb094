"""Checkpoints: atomic folders, discovery of the newest complete one, pruning, safe loading."""

import os
import random

import numpy as np
import pytest
import torch

from radio.engine import checkpoint as ckpt
from radio.errors import CheckpointError


def payload(value: float) -> ckpt.CheckpointPayload:
    return ckpt.CheckpointPayload(
        model_state={"w": torch.full((2, 2), value)},
        normalizer_state={"mean": torch.zeros(2)},
        optimizer_state={"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        trainer_state={"step": int(value), "scheduler": {"last_epoch": 3}},
        loader_state={"step": int(value)},
    )


def save(results, step, keep=2):
    return ckpt.save_checkpoint(
        str(results), step, payload(step), rank=0, is_main=True, barrier=lambda: None, keep=keep
    )


def test_newest_complete_checkpoint_is_found_and_old_ones_pruned(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step)
    names = [os.path.basename(p) for p in ckpt.list_complete_checkpoints(str(tmp_path))]
    assert names == ["step_0000002", "step_0000003"]
    # A half-written folder (no trainer_state.json) is never chosen.
    os.makedirs(tmp_path / "checkpoints" / "step_0000009")
    assert ckpt.find_resume_checkpoint(str(tmp_path), None).endswith("step_0000003")


def test_round_trip_restores_state_and_rng(tmp_path):
    torch.manual_seed(0)
    random.seed(1)
    np.random.seed(2)
    path = save(tmp_path, 5)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    loaded = ckpt.load_checkpoint(path, rank=0)
    ckpt.set_rng_state(loaded.rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    assert torch.equal(loaded.model_state["w"], torch.full((2, 2), 5.0))
    assert loaded.trainer_state["step"] == 5 and loaded.loader_state == {"step": 5}


def test_stale_temp_folder_is_cleaned_and_never_resumed(tmp_path):
    stale = tmp_path / "checkpoints" / ".step_0000007.tmp"
    os.makedirs(stale)
    assert ckpt.find_resume_checkpoint(str(tmp_path), None) is None
    save(tmp_path, 8)
    assert not stale.exists()


def test_pickled_code_in_optimizer_file_is_refused(tmp_path):
    path = save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, os.path.join(path, "optimizer.pt"))
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        ckpt.load_checkpoint(path, rank=0)


def test_explicit_resume_path_must_be_complete(tmp_path):
    with pytest.raises(CheckpointError, match="resume_training_checkpoint_path"):
        ckpt.find_resume_checkpoint(str(tmp_path), str(tmp_path / "nope"))


def test_an_explicit_resume_path_gives_way_to_newer_checkpoints_of_this_run(tmp_path):
    other = tmp_path / "other"
    start = save(other, 2)
    assert ckpt.find_resume_checkpoint(str(tmp_path / "run"), start) == start
    newer = save(tmp_path / "run", 5)
    assert ckpt.find_resume_checkpoint(str(tmp_path / "run"), start) == newer


def test_saving_a_step_that_exists_keeps_the_complete_folder(tmp_path):
    path = save(tmp_path, 4)
    before = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    assert save(tmp_path, 4) == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == before
