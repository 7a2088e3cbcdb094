"""A detection run trains the same under two DDP ranks and under DeepSpeed ZeRO-3 (fp32 on CPU): the same
losses step by step and the same exported detector — the teacher replicated, the student sharded."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.detection.runs import detection_spec, write_coco, write_spec, write_teacher
from tests.engine.launchers import launch

BINDINGS = [
    {"teacher_module_name": "srcs", "criterion": "L2", "weight": 10.0},
    {"teacher_module_name": "pred_logits", "criterion": "KL"},
    {"teacher_module_name": "pred_boxes", "criterion": "GIOU"},
]


def loss_rows(results_dir: str) -> list:
    with open(os.path.join(results_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k.startswith("loss/")} for row in rows if "loss/total" in row]


@pytest.mark.slow
def test_detection_distillation_is_the_same_under_ddp_and_zero3(tmp_path):
    coco = write_coco(str(tmp_path / "coco"), train=8, val=4)
    teacher = write_teacher(str(tmp_path / "teacher"), perturb=0.05)
    runs = {}
    for engine in ("ddp", "zero3"):
        results = str(tmp_path / engine)
        spec = detection_spec(
            results, coco, teacher, distill={"bindings": BINDINGS}, train={"max_steps": 3, "torch_threads": None}
        )
        proc = launch(engine, [], spec=write_spec(str(tmp_path / f"{engine}.yaml"), spec))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[engine] = results
    ddp, zero3 = (loss_rows(runs[e]) for e in ("ddp", "zero3"))
    assert len(ddp) == 3 and ddp[0].keys() == zero3[0].keys()
    assert {"loss/detection", "loss/kd/srcs_L2", "loss/kd/pred_logits_KL", "loss/kd/pred_boxes_GIOU"} <= ddp[0].keys()
    for a, b in zip(ddp, zero3):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    finals = [load_file(os.path.join(runs[e], "detector_final", "model.safetensors")) for e in ("ddp", "zero3")]
    assert finals[0].keys() == finals[1].keys()
    for key in finals[0]:
        assert torch.allclose(finals[0][key], finals[1][key], rtol=1e-3, atol=1e-5), key
