"""FrozenTeacher: frozen, bf16, inference mode, float32 targets usable in a loss; demo weights."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from radio.models.demo import save_demo_teacher
from radio.models.teacher import FrozenTeacher


@pytest.mark.parametrize("name,patch,dim", [("demo_vit_tiny_patch16", 16, 96), ("demo_vit_tiny_patch14", 14, 128)])
def test_demo_teacher_loads_strictly_and_is_frozen(tmp_path, name, patch, dim):
    path = save_demo_teacher(name, str(tmp_path / f"{name}_demo.safetensors"), seed=3)
    teacher = FrozenTeacher(name, path, input_size=4 * patch)
    assert teacher.load_report.ok
    assert (teacher.patch_size, teacher.embed_dim, teacher.summary_dim) == (patch, dim, dim)
    assert teacher.has_summary
    params = list(teacher.parameters())
    assert params and all(not p.requires_grad and p.dtype == torch.bfloat16 for p in params)
    teacher.train()
    assert not teacher.training and not teacher.model.training
    out = teacher(torch.randn(2, 3, 4 * patch, 6 * patch))
    assert out.summary.dtype == torch.float32 and out.spatial.shape == (2, dim, 4, 6) and out.logits is None
    # Targets are ordinary tensors: a loss against them can be differentiated.
    pred = torch.zeros_like(out.spatial, requires_grad=True)
    torch.nn.functional.cosine_similarity(pred + 1, out.spatial, dim=1).mean().backward()
    assert pred.grad is not None and not out.spatial.is_inference()


def test_demo_weights_are_seeded_and_labelled(tmp_path):
    a = save_demo_teacher("demo_vit_tiny_patch16", str(tmp_path / "a_demo.safetensors"), seed=1)
    b = save_demo_teacher("demo_vit_tiny_patch16", str(tmp_path / "b_demo.safetensors"), seed=1)
    sa, sb = load_file(a), load_file(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with safe_open(a, "pt") as f:
        assert f.metadata()["radio"] == "demo teacher, random weights"
    with pytest.raises(ValueError, match="demo"):
        save_demo_teacher("demo_vit_tiny_patch16", str(tmp_path / "teacher.safetensors"), seed=1)


def test_bf16_matches_fp32_closely(tmp_path):
    path = save_demo_teacher("demo_vit_tiny_patch14", str(tmp_path / "demo.safetensors"), seed=0)
    x = torch.randn(2, 3, 56, 56)
    lo = FrozenTeacher("demo_vit_tiny_patch14", path, input_size=56)(x)
    hi = FrozenTeacher("demo_vit_tiny_patch14", path, input_size=56, dtype=torch.float32)(x)
    cos = torch.nn.functional.cosine_similarity(lo.spatial, hi.spatial, dim=1)
    assert cos.min() > 0.99


def test_input_must_be_patch_aligned(tmp_path):
    teacher = FrozenTeacher("demo_vit_tiny_patch14", None, input_size=56)
    with pytest.raises(ValueError, match="multiple of its patch size 14"):
        teacher(torch.randn(1, 3, 56, 64))
