"""The hot path reads the device once per optimizer step (the gradient norm, with the stop agreement) and
never per micro-batch: every way Python can read a tensor's value is counted during a training step.

torch's own optimizers read their step counters (``_get_value``), which live on the host even under CUDA
(``capturable=False``): those reads are not device synchronisations and are not counted. The crops are decoded
in a DataLoader worker, as in any real run (host work on host tensors, in another process).
"""

import os
import sys

import pytest
import torch

from radio.engine.loop import Instrumentation, run
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy")


@pytest.mark.slow
@pytest.mark.parametrize("accum", [1, 3])
def test_a_step_reads_the_device_once(demo_assets, tmp_path, monkeypatch, accum):
    reads = []
    counting = {"on": False}

    def counted(name, original):
        def wrapper(self, *args, **kwargs):
            if counting["on"] and f"torch{os.sep}optim{os.sep}" not in sys._getframe(1).f_code.co_filename:
                reads.append(name)
            return original(self, *args, **kwargs)

        return wrapper

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    per_step = {}

    def after_step(step: int) -> None:
        if counting["on"]:
            per_step[step] = list(reads)
        reads.clear()
        counting["on"] = 2 <= step < 5  # steps 3..5: no refresh (every 100 steps), no logging, no checkpoint

    extra = (
        "train.max_steps=6",  # the last step logs (a flush reads): steps 3..5 are plain
        f"train.grad_accumulation_steps={accum}",
        "train.log_every_n_steps=100",
        "distill.phi_s.refresh_every_n_steps=100",
        "dataset.workers=1",
    )
    cfg = load_run_config(
        os.path.join(REPO, "specs", "quickstart.yaml"), tiny_run_overrides(demo_assets, str(tmp_path / "r"), *extra)
    )
    run(cfg, instrument=Instrumentation(after_step=after_step))
    assert per_step == {3: ["__float__"], 4: ["__float__"], 5: ["__float__"]}  # the gradient norm, only
