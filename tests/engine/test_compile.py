"""train.compile=true runs the compiled student and keeps checkpoint keys identical to eager runs."""

import os

import pytest
from safetensors.torch import load_file

from radio.engine.loop import run
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_compiled_run_checkpoints_with_eager_key_names(demo_assets, trained_results, tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    results = str(tmp_path / "compiled")
    run(
        load_run_config(
            QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1", "train.compile=true")
        )
    )
    compiled = load_file(os.path.join(results, "checkpoints", "step_0000001", "model.safetensors"))
    eager = load_file(os.path.join(trained_results, "checkpoints", "step_0000004", "model.safetensors"))
    assert compiled.keys() == eager.keys()
    assert counters["stats"]["unique_graphs"] >= 1  # the student really ran through torch.compile
