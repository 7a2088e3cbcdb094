"""Checkpoints: atomic folders, discovery of the newest complete one, pruning, the run state round trip,
safe loading."""

import errno
import json
import os
import random
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from radio.config.schema import OptimConfig
from radio.engine.metrics import MetricsWindow
from radio.engine.optim import build_scheduler
from radio.engine.params import ReplicatedParams
from radio.engine.run_state import RunState, resume
from radio.errors import CheckpointError
from radio.run import layout


class FakeLoader:
    def __init__(self, step=0):
        self.step = step

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def run_state(value: float, world_size: int = 1) -> RunState:
    model = nn.Linear(2, 2)
    nn.init.constant_(model.weight, value)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = build_scheduler(optimizer, OptimConfig(lr=0.1, policy="cosine"), 10, 10)
    loss_state = nn.ModuleDict({"normalizers": nn.ModuleDict(), "criteria": nn.ModuleDict()})
    window = MetricsWindow(["a"], torch.device("cpu"))
    state = RunState(
        ReplicatedParams(model, optimizer),
        loss_state,
        scheduler,
        FakeLoader(int(value)),
        window,
        rank=0,
        world_size=world_size,
        total_steps=10,
    )
    state.counters.step = int(value)
    return state


def edit_trainer_state(folder, change):
    path = os.path.join(folder, layout.TRAINER_STATE)
    with open(path) as f:
        state = json.load(f)
    change(state)
    with open(path, "w") as f:
        json.dump(state, f)


def resume_into(results, explicit=None):
    return resume(run_state(0), str(results), explicit, agree=lambda error: error, is_main=True, say=print)


def save(results, step, keep=2):
    return run_state(step).save(str(results), agree=lambda error: error, keep=keep)


def test_newest_complete_checkpoint_is_found_and_old_ones_pruned(tmp_path):
    for step in (1, 2, 3):
        save(tmp_path, step)
    names = [os.path.basename(p) for p in layout.list_complete_checkpoints(str(tmp_path))]
    assert names == ["step_0000002", "step_0000003"]
    # A half-written folder (no trainer_state.json) is never chosen.
    os.makedirs(tmp_path / "checkpoints" / "step_0000009")
    assert resume_into(tmp_path).endswith("step_0000003")


def test_round_trip_restores_the_whole_run_state_and_rng(tmp_path):
    torch.manual_seed(0)
    random.seed(1)
    np.random.seed(2)
    source = run_state(5)
    source.window.sums["loss/total"] = torch.tensor(1 / 3, dtype=torch.float64)  # a window half-way through
    source.window.micro_steps = 2
    path = source.save(str(tmp_path), agree=lambda error: error, keep=2)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    restored = run_state(0)
    restored.load(path)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    assert torch.equal(restored.params.module.weight, source.params.module.weight)
    for p, q in zip(restored.params.module.parameters(), source.params.module.parameters()):
        a, b = restored.params.optimizer.state[p], source.params.optimizer.state[q]
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert restored.counters.step == 5 and restored.loader.step == 5
    assert restored.scheduler.state_dict() == source.scheduler.state_dict()
    assert restored.window.sums["loss/total"].item() == 1 / 3 and restored.window.micro_steps == 2


def test_a_checkpoint_leaves_the_normaliser_statistics_as_they_were_and_restores_them(tmp_path):
    """Merging pending PHI-S sums at a checkpoint would change the float64 summation order of later
    refreshes, so a run checkpointed off-schedule (a stop) would drift from an uninterrupted one."""
    from radio.losses.phi_s import PhiStandardizer

    def with_normaliser(state: RunState) -> PhiStandardizer:
        norm = PhiStandardizer(4, refresh_every_n_steps=100)
        state.loss_state["normalizers"]["t"] = norm
        return norm

    source = run_state(3)
    norm = with_normaliser(source)
    features = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norm.observe(features[0], starts_step=True)
    norm.refresh_if_due()  # step 1 refreshes; the next micro-batches stay pending until step 101
    norm.observe(features[1], starts_step=False)
    norm.observe(features[2], starts_step=True)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    assert before["pending_count"].item() == 32
    path = source.save(str(tmp_path), agree=lambda error: error, keep=2)
    assert all(torch.equal(norm.state_dict()[k], v) for k, v in before.items())  # saving changed nothing
    restored = run_state(0)
    restored_norm = with_normaliser(restored)
    restored.load(path)
    assert all(torch.equal(restored_norm.state_dict()[k], v) for k, v in before.items())


def test_another_world_size_is_refused_naming_both(tmp_path):
    path = save(tmp_path, 3)
    with pytest.raises(
        CheckpointError, match=r"written by 1 process\(es\) under DDP \(or one process\); this run has 2 under DDP"
    ):
        run_state(0, world_size=2).load(path)


def test_stale_temp_folder_is_cleaned_and_never_resumed(tmp_path):
    stale = tmp_path / "checkpoints" / ".step_0000007.tmp"
    os.makedirs(stale)
    assert resume_into(tmp_path) is None
    save(tmp_path, 8)
    assert not stale.exists()


def test_pickled_code_in_optimizer_file_is_refused(tmp_path):
    path = save(tmp_path, 1)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, os.path.join(path, "optimizer.pt"))
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        run_state(0).load(path)
    assert not marker.exists()


def test_trainer_state_is_written_last_and_names_the_engine(tmp_path):
    path = save(tmp_path, 2)
    with open(os.path.join(path, layout.TRAINER_STATE)) as f:
        state = json.load(f)
    assert state["engine"] == "ddp" and state["world_size"] == 1 and state["counters"]["step"] == 2


def test_explicit_resume_path_must_be_complete(tmp_path):
    with pytest.raises(CheckpointError, match="resume_training_checkpoint_path"):
        resume_into(tmp_path, str(tmp_path / "nope"))


def test_an_explicit_checkpoint_of_another_run_is_used_once_then_this_runs_own_progress(tmp_path):
    start = save(tmp_path / "other", 2)
    state = run_state(0)
    assert resume(state, str(tmp_path / "run"), start, agree=lambda error: error, is_main=True, say=print) == start
    state.counters.step = 5  # trained on from the explicit start: its checkpoints descend from it
    newer = state.save(str(tmp_path / "run"), agree=lambda error: error, keep=2)
    assert resume_into(tmp_path / "run", start) == newer  # a requeued job continues, it does not go back


def test_an_explicit_older_own_checkpoint_wins_and_newer_ones_are_set_aside(tmp_path):
    for step in (2, 4, 6):
        save(tmp_path, step, keep=3)
    older = os.path.join(layout.checkpoints_root(str(tmp_path)), "step_0000002")
    assert resume_into(tmp_path, older) == older
    names = sorted(os.listdir(layout.checkpoints_root(str(tmp_path))))
    assert names == ["step_0000002", "step_0000004.superseded", "step_0000006.superseded"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: open(os.path.join(p, "model.safetensors"), "wb").write(b"\x00" * 10), "model.safetensors"),
        (lambda p: open(os.path.join(p, "rng_rank0.pt"), "wb").close(), "rng_rank0.pt'.*EOFError"),
        (lambda p: os.remove(os.path.join(p, "optimizer.pt")), "missing optimizer.pt"),
        (lambda p: edit_trainer_state(p, lambda s: s["counters"].update(extra=1)), "damaged .*unexpected keyword"),
        (
            lambda p: edit_trainer_state(p, lambda s: s.pop("scheduler")),
            "must be an object with counters and scheduler",
        ),
    ],
)
def test_a_damaged_newest_checkpoint_is_reported_set_aside_and_the_previous_one_used(tmp_path, capsys, damage, reason):
    previous = save(tmp_path, 2, keep=3)
    newest = save(tmp_path, 4, keep=3)
    damage(newest)
    assert resume_into(tmp_path) == previous
    out = capsys.readouterr().out
    assert re.search(f"checkpoint {re.escape(newest)} cannot be used: .*{reason}", out), out
    assert not os.path.exists(newest) and os.path.isdir(newest + ".damaged")  # kept, out of discovery


def test_when_no_checkpoint_loads_nothing_is_set_aside(tmp_path):
    only = save(tmp_path, 2)
    os.remove(os.path.join(only, "model.safetensors"))
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be loaded"):
        resume_into(tmp_path)
    assert os.path.isdir(only)


def test_a_step_folder_without_trainer_state_is_set_aside_and_the_step_saved_again(tmp_path):
    previous = save(tmp_path, 2, keep=3)
    half = os.path.join(layout.checkpoints_root(str(tmp_path)), "step_0000004")
    os.makedirs(half)
    open(os.path.join(half, "model.safetensors"), "w").close()
    assert resume_into(tmp_path) == previous
    assert os.path.isdir(half + ".incomplete")
    assert save(tmp_path, 4, keep=3) == half  # no "Directory not empty"


def test_a_failed_write_removes_the_partial_folder_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import radio.engine.run_state as run_state_module

    previous = save(tmp_path, 2, keep=3)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_state_module, "save_file", disk_full)
    with pytest.raises(
        CheckpointError, match=r"could not write checkpoint step_0000004 .*No space left on device.*MiB free"
    ) as info:
        save(tmp_path, 4, keep=3)
    assert f"the newest complete checkpoint is still {previous}" in str(info.value)
    assert os.listdir(layout.checkpoints_root(str(tmp_path))) == ["step_0000002"]
    monkeypatch.undo()
    assert save(tmp_path, 4, keep=3).endswith("step_0000004")  # once there is space again


def test_saving_a_step_that_exists_keeps_the_complete_folder(tmp_path):
    path = save(tmp_path, 4)
    before = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    assert save(tmp_path, 4) == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == before
