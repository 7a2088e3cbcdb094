"""tools/convert_teacher.py: public layouts in, the plain safetensors state_dict training loads out."""

import os
import subprocess
import sys

import pytest
import torch
from models_helpers import distinct_weights
from public_layouts import openai_clip
from safetensors.torch import load_file

from radio.models.convert import main
from radio.models.teacher import FrozenTeacher

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_maps_checks_and_prints_what_it_mapped(save, tmp_path, capsys):
    model = distinct_weights("tiny_clip_vit_patch16")
    src = save(openai_clip(model.state_dict()), "open_clip.pt")
    dst = str(tmp_path / "clip.safetensors")
    assert main([src, dst, "--model", "tiny_clip_vit_patch16"]) == 0
    printed = capsys.readouterr().out
    assert "layout: openai_clip" in printed and "logit_scale (not part of the vision tower)" in printed
    state = load_file(dst)
    assert set(state) == set(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    got = FrozenTeacher("tiny_clip_vit_patch16", dst, input_size=64, dtype=torch.float32)(x)
    with torch.no_grad():
        assert torch.allclose(got.summary, model(x), atol=1e-5)


def test_cli_refuses_a_mismatch_with_exit_code(save, tmp_path, capsys):
    src = save(distinct_weights("tiny_dinov2_vit_patch14").state_dict(), "dino.safetensors")
    assert main([src, str(tmp_path / "o.safetensors"), "--model", "tiny_clip_vit_patch16"]) == 2
    assert "missing keys" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_without_model_it_only_unwraps(save, tmp_path):
    model = distinct_weights("demo_vit_tiny_patch16")
    src = save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, "ckpt.pth")
    dst = str(tmp_path / "plain.safetensors")
    assert main([src, dst]) == 0
    assert set(load_file(dst)) == set(model.state_dict())


@pytest.mark.slow
def test_tool_script_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert_teacher.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0 and "--trust-pickle" in out.stdout
