"""README.md's "Detection distillation" commands, read from the README and run in its order from a folder holding
``specs/`` as the repository root does; training is shrunk by ``TINY`` and the demo set by ``SMALL_DEMO``."""

import json
import os
import re

import pytest

from tests.conftest import REPO
from tests.engine.test_quickstart_readme import run_in

SMALL_DEMO = ["--train", "8", "--val", "4"]
TINY = [
    "train.max_steps=2",
    "dataset.batch_size=2",
    "dataset.workers=0",
    "dataset.augmentation.multi_scales=[]",
    "train.log_every_n_steps=1",
    "train.validation_interval_steps=2",
]


def readme_commands(section: str) -> list:
    """The lines of the first bash block under ``## {section}``, comments dropped."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(rf"## {re.escape(section)}\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


@pytest.mark.slow
def test_the_readme_detection_commands_work(tmp_path):
    os.symlink(os.path.join(REPO, "specs"), tmp_path / "specs")
    commands = readme_commands("Detection distillation")
    assert [c.split()[1] for c in commands] == ["coco-demo", "distill", "distill", "distill", "eval", "export"]
    for command in commands:
        extra = SMALL_DEMO if " coco-demo " in f" {command} " else TINY if " distill " in f" {command} " else []
        out = run_in(tmp_path, command, *extra)
        if " distill " in f" {command} ":
            assert "done: 2 steps" in out, out[-2000:]
    runs = tmp_path / "runs"
    for student in ("det_rtdetr_student", "det_deformable_student"):
        rows = [json.loads(line) for line in open(runs / student / "metrics.jsonl")]
        assert any(k.startswith("loss/kd/") for k in rows[0]) and any("val_mAP" in row for row in rows)
        assert (runs / student / "detector_final" / "config.json").is_file()
    result = json.loads((runs / "det_rtdetr_student" / "eval" / "eval.json").read_text())
    assert {"student", "teacher"} <= set(result["detection"]["val"])
    assert "loss/kd/srcs_IOU" in result["held_out"]["val"]
    assert (runs / "det_rtdetr_export" / "model.safetensors").is_file()
