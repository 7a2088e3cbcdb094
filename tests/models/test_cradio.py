"""C-RADIO ViT: CPE behaviour, agreement with timm's independent RADIO port, C-RADIO release layouts."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from models_helpers import distinct_weights
from public_layouts import cradio_hf, cradio_hub

from radio.errors import CheckpointError
from radio.models.convert import convert
from radio.models.formats import to_model_layout
from radio.models.checkpoint_io import compare
from radio.models.registry import create_model
from radio.models.teacher import FrozenTeacher

TINY = "c_radio_tiny_patch16"


@pytest.mark.parametrize("align_corners", [True, False])
def test_matches_timm_naflexvit_radio_port(align_corners):
    """timm ships its own port of C-RADIO (NaFlexVit, AR-preserving bilinear pos-embed crop); the same HF
    checkpoint must give the same tokens at the full grid, smaller squares and non-square sizes."""
    naflex = pytest.importorskip("timm.models.naflexvit")
    model = distinct_weights(TINY)
    model.patch_generator.align_corners = align_corners
    cfg = naflex._radio_vit_cfg(
        embed_dim=64, depth=4, num_heads=2, init_values=1e-5, reg_tokens=5, pos_embed_align_corners=align_corners
    )
    ref = naflex.NaFlexVit(cfg=dataclasses.replace(cfg, pos_embed_grid_size=(16, 16)), num_classes=0).eval()
    ref.load_state_dict(naflex.checkpoint_filter_fn(cradio_hf(model.state_dict(), stale_registers=0), ref))
    for hw in [(256, 256), (64, 64), (48, 80), (96, 32)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            expected = ref.forward_features(x)
            tokens, _ = model.features(x)
        assert torch.allclose(tokens, expected, atol=1e-4), hw


def test_eval_pos_embed_is_top_left_window_of_square_resize():
    model = create_model(TINY).eval()
    gen = model.patch_generator
    grid = gen.pos_embed.reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    square = F.interpolate(grid, size=(6, 6), mode="bilinear", align_corners=True)
    expected = square[:, :, :3, :6].flatten(2).transpose(1, 2)
    assert torch.allclose(gen.pos_embed_for(2, 3, 6), expected)
    assert torch.equal(gen.pos_embed_for(1, 16, 16), gen.pos_embed)  # the full grid is used as is


def test_training_cpe_is_random_per_sample_and_eval_deterministic():
    model = create_model(TINY)
    gen = model.patch_generator
    torch.manual_seed(0)
    gen.train()
    pos = gen.pos_embed_for(64, 4, 4)  # [64, 16, C]
    assert pos.shape == (64, 16, 64)
    kept = pos.abs().sum(dim=(1, 2)) > 0
    assert 0 < (~kept).sum() < 20  # ~10% of samples lose the whole position encoding
    flat = pos[kept].flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1.0).min() > 0  # every kept sample has its own crop
    gen.eval()
    assert torch.equal(gen.pos_embed_for(2, 4, 4), gen.pos_embed_for(2, 4, 4))


def _locality_check(run, shape, patch, channels):
    """With the transformer blocks removed, patch token (i, j) depends only on image patch (i, j): a change
    in one patch must show up at exactly that position of the spatial map."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, *shape)
    base = run(x)
    h, w = shape[0] // patch, shape[1] // patch
    assert base.shape == (1, channels, h, w)
    for i, j in [(0, w - 1), (h - 1, 0), (h // 2, w // 2)]:
        y = x.clone()
        y[:, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] += 1.0
        changed = (run(y) - base).abs().sum(dim=1)[0] > 1e-6
        assert changed.nonzero().tolist() == [[i, j]]


@pytest.mark.parametrize("shape", [(48, 80), (96, 32), (128, 128)])
def test_student_spatial_layout_at_any_size(shape):
    model = create_model(TINY).eval()
    model.blocks = torch.nn.Sequential()
    model.vitdet_windowed = []

    def run(x):
        with torch.no_grad():
            return model(x).spatial

    _locality_check(run, shape, 16, 64)


@pytest.mark.parametrize("shape", [(42, 70), (84, 28)])
def test_teacher_spatial_layout_at_any_size(shape):
    teacher = FrozenTeacher("tiny_dinov2_vit_patch14_reg4", None, input_size=56, dtype=torch.float32)
    teacher.model.blocks = torch.nn.Sequential()
    _locality_check(lambda x: teacher(x).spatial, shape, 14, 48)


def test_input_not_multiple_of_patch_is_refused():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        create_model(TINY)(torch.randn(1, 3, 40, 64))


def test_hf_release_with_normaliser_and_adaptor(save):
    model = distinct_weights(TINY)
    bare = save(model.state_dict(), "bare.safetensors")
    path = save(cradio_hf(model.state_dict(), stale_registers=2, summary_idxs=(0, 2), extras=True), "hf.safetensors")
    teacher = FrozenTeacher(TINY, path, input_size=64, dtype=torch.float32)
    report = teacher.load_report
    assert report.ok and report.dropped == {"reg_token": "stale in C-RADIO checkpoints, unused"}
    assert teacher.model.summary_idxs == [0, 2] and teacher.summary_dim == 128
    assert set(teacher.model.adaptors) == {"clip"}
    assert teacher.model.adaptors["clip"].feat_mlp.final[2].out_features == 20
    x = torch.randn(2, 3, 64, 96)
    got = teacher(x)
    native = FrozenTeacher(TINY, bare, input_size=64, dtype=torch.float32)(x)
    assert torch.allclose(got.spatial, (native.spatial - 0.1) * 2.0, atol=1e-5)  # (x - mean) @ tx.T
    cls = torch.cat([native.summary[:, :64], native.summary[:, 128:]], dim=1)  # slots 0 and 2
    assert torch.allclose(got.summary, cls, atol=1e-6)


def test_torchhub_release_needs_trust_pickle_and_converts_once(save, tmp_path):
    model = distinct_weights(TINY)
    hub = save(cradio_hub(model.state_dict(), stale_registers=2), "c-radio.pth.tar")
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        FrozenTeacher(TINY, hub, input_size=64)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        convert(hub, str(tmp_path / "out.safetensors"), TINY)
    out = str(tmp_path / "c_radio.safetensors")
    report = convert(hub, out, TINY, trust_pickle=True)
    assert report.fmt == "c_radio_hub" and report.ok
    teacher = FrozenTeacher(TINY, out, input_size=64, dtype=torch.float32)
    assert set(teacher.model.adaptors) == {"0"} and teacher.model.feature_normalizer is not None
    bare = FrozenTeacher(TINY, save(model.state_dict(), "bare.safetensors"), input_size=64, dtype=torch.float32)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(teacher(x).summary, bare(x).summary, atol=1e-6)  # EMA weights, not the zeroed ones


def test_spectral_reparametrised_release_is_folded(save):
    """C-RADIO hub checkpoints may store ``weight = original · s / σ`` parametrised linears. σ is computed
    here by torch's own spectral-norm parametrisation (eval mode), s = softplus(scale) + 0.05."""
    model = distinct_weights(TINY)
    state = dict(cradio_hub(model.state_dict(), stale_registers=2, extras=False)["state_dict_ema"])
    expected = dict(model.state_dict())
    torch.manual_seed(1)
    for i, (name, rows) in enumerate([("blocks.0.mlp.fc1", None), ("blocks.1.attn.qkv", 64)]):
        weight = state.pop(f"base_model.{name}.weight")
        thirds = [weight] if rows is None else list(weight.split(rows))
        folded = []
        for j, w in enumerate(thirds):
            if rows is not None and j == 2:  # values third left un-normalised
                folded.append(w)
                continue
            lin = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(w.shape[1], w.shape[0]))
            lin.parametrizations.weight.original.data.copy_(w)
            lin.train()(torch.zeros(1, w.shape[1]))  # a few power iterations for realistic u, v
            lin.eval()
            scale = torch.tensor([[0.3 * (j + 1)]])
            pre = f"base_model.{name}.parametrizations.weight.0." + ("" if rows is None else f"parts.{j}.")
            state[pre + "_u"], state[pre + "_v"] = lin.parametrizations.weight[0]._u, lin.parametrizations.weight[0]._v
            state[pre + "scale"], state[pre + "_sn_version"] = scale, torch.tensor(2)
            with torch.no_grad():
                folded.append(lin.weight * (torch.nn.functional.softplus(scale) + 0.05))
        state[f"base_model.{name}.parametrizations.weight.original"] = weight
        expected[f"{name}.weight"] = torch.cat(folded).detach()
    teacher = FrozenTeacher(TINY, save(state, "sn.safetensors"), input_size=64, dtype=torch.float32)
    assert any("spectral" in n for n in teacher.load_report.notes)
    for name in ("blocks.0.mlp.fc1.weight", "blocks.1.attn.qkv.weight"):
        assert torch.allclose(teacher.model.state_dict()[name], expected[name], rtol=1e-4, atol=1e-6)


# Published sizes (checkpoints.md): total tensor count of the HF layout, which also holds the stale
# reg_token (B, L) and the 6-value input conditioner.
PUBLISHED = [
    ("c_radio_v3_vit_base_patch16_reg4_dinov2", 98_254_854, 4),
    ("c_radio_v3_vit_large_patch16_reg4_dinov2", 319_934_470, 4),
    ("c_radio_v3_vit_huge_patch16_reg4_dinov2", 651_642_886, 0),
]


@pytest.mark.parametrize("name,count,stale", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_full_size_release_layout_maps_without_memory(name, count, stale):
    with torch.device("meta"):
        model = create_model(name)
        target = create_model(name)
    layout = cradio_hf(model.state_dict(), stale_registers=stale)
    layout.pop("radio_model.summary_idxs")  # an index buffer, not a parameter
    assert sum(v.numel() for v in layout.values()) == count
    mapped, report = to_model_layout(layout, target, path="meta", role="teacher")
    compare(mapped, target, report)
    assert report.ok, report.describe()
    assert target.patch_generator.pos_embed.shape[1] == 128 * 128
    assert target.patch_generator.cls_token.token.shape[0] == 8
