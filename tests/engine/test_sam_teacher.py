"""A SAM image encoder (segment_anything checkpoint layout, random weights) as a spatial-only teacher."""

import json
import os

import pytest
import torch

from radio.engine.loop import run
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides
from tests.models.test_sam import TINY_SAM_ARGS

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_a_segment_anything_checkpoint_distils_in_spatial_mode(demo_assets, tmp_path):
    modeling = pytest.importorskip("segment_anything.modeling")
    torch.manual_seed(0)
    encoder = modeling.ImageEncoderViT(img_size=256, **TINY_SAM_ARGS)
    checkpoint = {"image_encoder." + k: v for k, v in encoder.state_dict().items()}
    checkpoint["mask_decoder.iou_token.weight"] = torch.zeros(1, 32)  # a full SAM file carries the decoder too
    path = str(tmp_path / "sam_tiny.pth")
    torch.save(checkpoint, path)
    results = str(tmp_path / "r")
    teacher = (
        "{name: sam, model: {backbone: {type: tiny_sam_vit_patch16}}, pretrained_teacher_model_path: "
        f"{path}, input_size: 256, match_student_resolution: false}}"
    )
    cfg = load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, f"distill.teacher=[{teacher}]"))
    result = run(cfg)
    assert result.steps == 4 and result.teacher_names == ["sam"]
    with open(os.path.join(results, "config.yaml")) as f:
        assert "mode: spatial" in f.read()  # auto -> spatial: SAM has no summary
    with open(os.path.join(results, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert all(r["loss/sam"] is not None and r["loss/sam"] > 0 for r in rows)
    with open(os.path.join(results, "teachers.json")) as f:
        (record,) = json.load(f)
    assert record["layout"] == "segment_anything" and "mask_decoder.iou_token.weight" in record["ignored"]
