"""Kill after a checkpoint, restart: the continuation is bit-identical on CPU fp32 (same keys, same losses)."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from radio.config.load import load_run_config
from radio.engine.loop import run
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


def rows(results):
    with open(os.path.join(results, "metrics.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f)}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_resume_from_checkpoint_continues_exactly(demo_assets, tmp_path, workers):
    extra = (
        "train.max_steps=6",
        "train.checkpoint_interval_steps=3",
        "train.keep_checkpoints=3",
        "distill.phi_s.refresh_every_n_steps=2",
        f"dataset.workers={workers}",
        "dataset.augmentation.stochastic_resolutions={48: 0.5, 64: 0.5}",
        "distill.vitdet.prob=0.5",
        "train.grad_accumulation_steps=2",
    )
    full = str(tmp_path / "full")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, full, *extra)))

    # The same run "killed" right after its step-3 checkpoint: later state and metrics never written.
    cut = str(tmp_path / "cut")
    shutil.copytree(full, cut)
    # metrics.jsonl keeps the rows logged after the checkpoint, as after a real kill -9.
    shutil.rmtree(os.path.join(cut, "checkpoints", "step_0000006"))
    os.remove(os.path.join(cut, "student_final.safetensors"))

    result = run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, cut, *extra)))
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
    from radio.errors import CheckpointError

    results = str(tmp_path / "run")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))
    changed = tiny_run_overrides(demo_assets, results, "train.max_steps=2", "distill.mlp_hidden_size=64")
    with pytest.raises(CheckpointError, match="wrong-shape keys") as info:
        run(load_run_config(QUICKSTART_SPEC, changed))
    assert "fresh results_dir" in str(info.value)
