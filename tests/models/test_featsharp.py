"""FeatSharp upsampler adaptor: strict checkpoint loading, shapes, local attention, spectral folding, tiling."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from featsharp_files import to_spectral, write_featsharp_checkpoint
from safetensors.torch import save_file
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from radio.errors import CheckpointError
from radio.models.featsharp import load_featsharp
from radio.models.featsharp.attention import alibi_slopes, local_alibi_attention, window_pairs
from radio.models.featsharp.checkpoint import spectral_weight
from radio.models.featsharp.upsampler import assemble_tiles, tile_inputs

C, P, R = 48, 4, 16  # width, patch, teacher resolution: a 4x4 low-res grid
GRID = R // P


class Featurizer(nn.Module):
    """A tiny random patch-embedding teacher: x [N, 3, R, R] -> (summary [N, 8], spatial [N, C, R/P, R/P])."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Conv2d(3, C, P, stride=P)
        self.head = nn.Linear(C, 8)
        self.dtype = dtype

    def forward(self, x):
        feats = self.proj(x)
        return self.head(feats.mean((2, 3))), feats.to(self.dtype)


@pytest.fixture
def ckpt(tmp_path):
    def make(name="fs.pth", **kw):
        path = str(tmp_path / name)
        args = dict(embed_dim=C, patch_size=P, input_size=R)
        args.update(kw)
        chk = write_featsharp_checkpoint(path, **args)
        return path, chk

    return make


def load(path, **kw):
    return load_featsharp(path, embed_dim=C, patch_size=P, input_size=R, **kw)


@pytest.mark.parametrize(
    "kind,factor",
    [("featsharp.no-ln.inputs-jafar-tiles", 2), ("featsharp", 2), ("featsharp.wnd-3.inputs-bilinear-jbu-tiles", 4)],
)
def test_strict_load_and_shapes(ckpt, kind, factor):
    path, _ = ckpt(upsampler_type=kind, factor=factor)
    adaptor, report = load(path)
    assert report.ok and "downsampler.attn_kernel.weight" in report.dropped
    assert adaptor.upsample_factor == factor and adaptor.input_factor == factor
    assert adaptor.teacher_forwards_per_image() == 1 + factor**2
    assert not adaptor.training and not any(p.requires_grad for p in adaptor.parameters())
    images = torch.randn(2, 3, R * factor, R * factor)
    teacher = Featurizer()
    with torch.inference_mode():
        summary, spatial = adaptor(images, teacher)
        expected_summary, _ = teacher(F.interpolate(images, (R, R), mode="bilinear", align_corners=False))
    assert spatial.shape == (2, C, GRID * factor, GRID * factor) and spatial.dtype == torch.float32
    assert torch.isfinite(spatial).all()
    assert torch.equal(summary, expected_summary)
    assert adaptor.flops_per_image() > 0


def test_featurizer_called_once_and_none_summary(ckpt):
    path, _ = ckpt()
    adaptor, _ = load(path)
    calls = []

    def teacher(x):
        calls.append(x.shape[0])
        return None, Featurizer()(x)[1]

    with torch.inference_mode():
        summary, _ = adaptor(torch.randn(3, 3, 2 * R, 2 * R), teacher)
    assert summary is None and calls == [3 * (1 + 4)]


def test_bf16_teacher_gives_float32(ckpt):
    path, _ = ckpt()
    adaptor, _ = load(path)
    with torch.inference_mode():
        _, spatial = adaptor(torch.randn(1, 3, 2 * R, 2 * R), Featurizer(torch.bfloat16))
    assert spatial.dtype == torch.float32


def test_no_upsample_keeps_grid_and_applies_bias(ckpt):
    path, chk = ckpt()
    adaptor, report = load(path, do_upsample=False)
    assert adaptor.upsample_factor == 1 and adaptor.input_factor == 1 and adaptor.teacher_forwards_per_image() == 1
    assert any(k.startswith("upsampler.") for k in report.dropped)
    teacher = Featurizer()
    images = torch.randn(2, 3, R, R)
    with torch.inference_mode():
        _, spatial = adaptor(images, teacher)
        feats = teacher(images)[1]
    ms = chk["model_state"]
    bias = ms["bias_buffer.buffer"]
    # denormalize(normalize(x) + b) = x + inv_rotation @ b / alpha
    shift = torch.einsum("dc,bchw->bdhw", ms["normalizer.inv_rotation"], bias) / ms["normalizer.alpha"]
    assert spatial.shape == (2, C, GRID, GRID)
    torch.testing.assert_close(spatial, feats + shift, atol=1e-5, rtol=1e-5)


def test_ddp_prefix_and_safetensors(ckpt, tmp_path):
    path, chk = ckpt(ddp=True, cond_bias=True, normalizer="phi-s-noalpha")
    adaptor, report = load(path)
    assert report.ok and adaptor.cond_bias_transform is not None
    images = torch.randn(1, 3, 2 * R, 2 * R)
    st = str(tmp_path / "fs.safetensors")
    save_file(
        {k: v.contiguous() for k, v in chk["model_state"].items()},
        st,
        {"upsample_args": json.dumps(chk["upsample_args"])},
    )
    adaptor2, _ = load(st)
    with torch.inference_mode():
        a, b = adaptor(images, Featurizer())[1], adaptor2(images, Featurizer())[1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_not_spectral_layout(ckpt):
    path, _ = ckpt(spectral=False, bias_buffer=False, normalizer="none")
    adaptor, report = load(path)
    assert report.ok and adaptor.bias_buffer is None and not adaptor.normalizer.enabled


def _refused(path, match, **kw):
    with pytest.raises(CheckpointError, match=match) as err:
        load(path, **kw)
    assert path in str(err.value)
    return err.value


def test_wrong_width_and_grid(ckpt):
    path, _ = ckpt(embed_dim=32)
    _refused(path, "32-channel .* embed_dim 48")
    path, _ = ckpt(name="grid.pth", grid=8)
    _refused(path, "8x8 low-res grid .* 4x4")


def test_missing_and_unexpected_keys(ckpt, tmp_path):
    path, chk = ckpt()
    ms = chk["model_state"]
    key = "upsampler.ups.0.block.mlp.w12.parametrizations.weight.0.parts.1._u"
    del ms[key]
    torch.save(chk, path)
    err = _refused(path, "missing")
    assert key in err.report.missing
    path, chk = ckpt(name="extra.pth")
    chk["model_state"]["upsampler.ups.0.extra.weight"] = torch.zeros(3)
    chk["model_state"]["normalizer.scale"] = torch.zeros(3)
    torch.save(chk, path)
    err = _refused(path, "unexpected")
    assert {"upsampler.ups.0.extra.weight", "normalizer.scale"} <= set(err.report.unexpected)
    path, chk = ckpt(name="shape.pth")
    chk["model_state"]["upsampler.ups.0.tile_pos"] = torch.zeros(1, C, 3, 3)
    torch.save(chk, path)
    err = _refused(path, "wrong-shape")
    assert err.report.mismatched[0][0] == "upsampler.ups.0.tile_pos"


@pytest.mark.parametrize(
    "kind,normalizer",
    [
        ("featsharp.xpos-qk", "phi-s"),
        ("featsharp.prog", "phi-s"),
        ("featsharp.inputs-rgb-tiles", "phi-s"),
        ("loftup", "phi-s"),
        ("featsharp+bilinear", "phi-s"),
        ("featsharp", "layernorm"),
    ],
)
def test_unsupported_variants(ckpt, kind, normalizer):
    path, chk = ckpt()
    chk["upsample_args"] = {"type": kind, "factor": 2, "normalizer": normalizer}
    torch.save(chk, path)
    _refused(path, "unsupported FeatSharp .*supported")


class Opaque:
    pass


def test_pickled_object_refused(tmp_path):
    path = str(tmp_path / "obj.pth")
    torch.save({"model_state": {}, "upsample_args": Opaque()}, path)
    _refused(path, "refusing to unpickle .*torch.save")


@pytest.mark.parametrize("side,window", [(11, 7), (16, 7), (5, 3), (9, 9)])
def test_local_attention_equals_dense_masked(side, window):
    torch.manual_seed(0)
    b, h, d = 2, 4, 8
    q, k, v = (torch.randn(b, h, side * side, d) for _ in range(3))
    idx = torch.arange(side * side)
    dr = (idx[:, None] // side - idx[None] // side).abs()
    dc = (idx[:, None] % side - idx[None] % side).abs()
    radius = window // 2
    mask = (dr <= radius) & (dc <= radius)
    slopes = alibi_slopes(h)
    bias = torch.stack([-slopes[i] * (dr if i % 2 == 0 else dc).float() for i in range(h)])
    scores = (q @ k.transpose(-1, -2)) * 0.3 + bias
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(local_alibi_attention(q, k, v, side, window, 0.3), ref, atol=1e-5, rtol=1e-5)
    assert window_pairs(side, radius) == int(mask.sum())


class _ReplicaSN(_SpectralNorm):
    """FeatSharp's version-2 reparametrisation on top of torch's ``_SpectralNorm`` (power iteration included)."""

    def __init__(self, weight):
        super().__init__(weight, n_power_iterations=1, dim=0, eps=1e-6)
        self.register_buffer("_sn_version", torch.tensor(2))
        self.sn_scale = nn.Parameter(torch.zeros(1, 1))

    def forward(self, weight):
        mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(mat, self.n_power_iterations)
        sigma = torch.dot(self._u.clone(), torch.mv(mat, self._v.clone())) + self.eps
        return weight * ((F.softplus(self.sn_scale) + 0.05) / sigma)


def test_spectral_fold_matches_torch_parametrization():
    torch.manual_seed(0)
    lin = nn.Linear(12, 20)
    parametrize.register_parametrization(lin, "weight", _ReplicaSN(lin.weight))
    holder = nn.Module()
    holder.lin = nn.Linear(12, 20)
    state = to_spectral({"lin.weight": torch.randn(20, 12)}, holder, torch.Generator().manual_seed(0))
    stored = {k[len("lin.") :]: v for k, v in state.items()}
    lin.load_state_dict({"bias": lin.bias.detach(), **stored}, strict=True)
    parametrize.remove_parametrizations(lin, "weight")  # training mode: one power iteration, then bake
    pre = "parametrizations.weight.0."
    folded = spectral_weight(
        stored["parametrizations.weight.original"], stored[pre + "_u"], stored[pre + "_v"], stored[pre + "sn_scale"], 2
    )
    torch.testing.assert_close(folded, lin.weight.detach(), atol=0, rtol=1e-6)


def test_tile_assembly_places_tiles():
    f, res = 3, 8
    blocks = torch.arange(f * f, dtype=torch.float32).reshape(1, 1, f, f)
    images = blocks.repeat_interleave(res, 2).repeat_interleave(res, 3).expand(2, 3, -1, -1) * torch.tensor(
        [1.0, 10.0]
    ).reshape(2, 1, 1, 1)
    crops = tile_inputs(images, res, f)
    assert crops.shape == (2 + 2 * f * f, 3, res, res)
    per_tile = crops[2:].mean((1, 2, 3), keepdim=True).expand(-1, 5, 2, 2)  # a constant per tile
    grid = assemble_tiles(per_tile, f)
    assert grid.shape == (2, 5, 2 * f, 2 * f)
    expected = blocks.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(grid[0, :1], expected[0])
    torch.testing.assert_close(grid[1, :1], 10 * expected[0])
