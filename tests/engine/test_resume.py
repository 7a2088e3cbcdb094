"""Kill after a checkpoint, restart: the continuation is bit-identical on CPU fp32 (same keys, same losses)."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from radio.data.prefetch import DevicePrefetcher
from radio.engine.loop import Instrumentation, run
from radio.errors import CheckpointError, RadioError
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


def rows(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


@pytest.mark.slow
@pytest.mark.parametrize("workers, read_ahead", [(0, False), (1, False), (1, True)])
def test_resume_from_checkpoint_continues_exactly(demo_assets, tmp_path, workers, read_ahead):
    """``read_ahead``: batches come through the GPU prefetcher's read-ahead (on CPU: no copy), so the loader
    is one batch further than training when a checkpoint is written."""
    instrument = Instrumentation(batches=lambda b: DevicePrefetcher(b, torch.device("cpu")) if read_ahead else b)
    extra = (
        "train.max_steps=6",
        "train.keep_checkpoints=3",
        "distill.phi_s.refresh_every_n_steps=2",
        f"dataset.workers={workers}",
        "dataset.augmentation.stochastic_resolutions={48: 0.5, 64: 0.5}",
        "distill.vitdet.prob=0.5",
        "train.grad_accumulation_steps=2",
    )
    # The reference checkpoints only at its end: a checkpoint must not change what a run computes (the
    # interrupted run below has one more, as a stop or a checkpoint interval would give it).
    full = str(tmp_path / "full")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, full, *extra)), instrument=instrument)
    extra = (*extra, "train.checkpoint_interval_steps=3")
    source = str(tmp_path / "source")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, source, *extra)), instrument=instrument)

    # That run "killed" right after its step-3 checkpoint: later state and metrics never written.
    cut = str(tmp_path / "cut")
    shutil.copytree(source, cut)
    # metrics.jsonl keeps the rows logged after the checkpoint, as after a real kill -9.
    shutil.rmtree(os.path.join(cut, "checkpoints", "step_0000006"))
    os.remove(os.path.join(cut, "student_final.safetensors"))

    result = run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, cut, *extra)), instrument=instrument)
    assert result.resumed_from.endswith("step_0000003")

    a, b = rows(full), rows(cut)
    with open(os.path.join(cut, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4, 5, 6]  # every step logged once
    for step in (4, 5, 6):
        for key in ("loss/total", "loss/demo_a", "loss/demo_b", "lr"):
            assert a[step][key] == b[step][key], (step, key)
    wa = load_file(os.path.join(full, "student_final.safetensors"))
    wb = load_file(os.path.join(cut, "student_final.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_with_other_heads_names_the_keys_instead_of_crashing(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))
    changed = tiny_run_overrides(demo_assets, results, "train.max_steps=2", "distill.mlp_hidden_size=64")
    with pytest.raises(CheckpointError, match="wrong-shape keys") as info:
        run(load_run_config(QUICKSTART_SPEC, changed))
    assert "fresh results_dir" in str(info.value)


@pytest.mark.slow
def test_a_second_run_on_a_busy_results_dir_is_refused(demo_assets, tmp_path):
    from radio.engine.lock import ResultsDirLock

    results = str(tmp_path / "run")
    holder = ResultsDirLock(results)
    assert holder.acquire() is None  # another run holds the folder
    with pytest.raises(RadioError, match=r"is in use by another run \(pid \d+ on .* since .*\); wait for it"):
        run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))
    holder.release()
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))


@pytest.mark.slow
def test_a_refused_resume_leaves_the_runs_config_alone(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))
    config = os.path.join(results, "config.yaml")
    before = open(config).read()
    state_file = os.path.join(results, "checkpoints", "step_0000001", "trainer_state.json")
    with open(state_file) as f:
        state = json.load(f)
    state["world_size"] = 2  # as if written by a 2-rank launch
    with open(state_file, "w") as f:
        json.dump(state, f)
    other = tiny_run_overrides(demo_assets, results, "train.max_steps=2", "distill.mlp_hidden_size=64")
    with pytest.raises(
        CheckpointError, match=r"written by 2 process\(es\) under DDP \(or one process\); this run has 1"
    ):
        run(load_run_config(QUICKSTART_SPEC, other))
    assert open(config).read() == before


@pytest.mark.slow
def test_resuming_under_a_longer_schedule_says_the_learning_rate_moves(demo_assets, tmp_path, capsys):
    results = str(tmp_path / "run")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=2")))
    capsys.readouterr()
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=4")))
    out = capsys.readouterr().out
    assert "note: the learning-rate schedule now spans 4 steps (the checkpoint's run planned 2); from step 2" in out
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=4")))
    assert "learning-rate schedule" not in capsys.readouterr().out  # same schedule: nothing to say
