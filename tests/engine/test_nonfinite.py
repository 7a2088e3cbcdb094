"""Non-finite losses skip the optimizer step (agreed by all ranks); too many in a row stop the run."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from radio.config.load import load_run_config
from radio.engine.loop import run
from radio.errors import RadioError
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_nonfinite_steps_are_skipped_then_the_run_stops(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    cfg = load_run_config(
        QUICKSTART_SPEC,
        tiny_run_overrides(
            demo_assets,
            results,
            "train.max_steps=20",
            "train.optim.lr=1e30",
            "train.optim.warmup_steps=0",
            "train.clip_grad_norm=0",
            "train.max_consecutive_nonfinite=3",
            "train.checkpoint_interval_steps=1",
            "train.keep_checkpoints=20",
        ),
    )
    with pytest.raises(RadioError, match="non-finite for 3 optimizer steps in a row"):
        run(cfg)
    with open(os.path.join(results, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    skipped = [r for r in rows if r["nonfinite_skipped_total"] > 0]
    assert skipped and skipped[-1]["nonfinite_skipped_total"] == 2  # the third one stops the run
    # Skipped steps leave the weights alone: the two checkpoints after the first skip hold the same student.
    first = skipped[0]["step"]
    a = load_file(os.path.join(results, "checkpoints", f"step_{first - 1:07d}", "model.safetensors"))
    b = load_file(os.path.join(results, "checkpoints", f"step_{first + 1:07d}", "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
