"""Every supported public layout loads strictly into the right model and computes what native weights do."""

import pickle

import pytest
import torch
from models_helpers import distinct_weights
from public_layouts import (
    cradio_hf,
    dinov2_original,
    hf_clip,
    hf_dinov2,
    hf_siglip,
    open_clip_timm,
    openai_clip,
)

from radio.errors import CheckpointError
from radio.models.checkpoint_io import load_into, read_state_dict
from radio.models.registry import create_model, get_model_info
from radio.models.teacher import FrozenTeacher, teacher_features

NOT_BUILT = "classifier head, not built (num_classes: 0)"

# (case id, registry model, writer, file name, detected layout, native tensors the public layout lacks)
CASES = [
    ("timm", "demo_vit_tiny_patch16", lambda sd: sd, "w.safetensors", "timm", []),
    ("openai_clip", "tiny_clip_vit_patch16", openai_clip, "w.pt", "openai_clip", []),
    ("open_clip_timm", "tiny_siglip_vit_patch16", open_clip_timm, "w.safetensors", "open_clip_timm", []),
    (
        "nv_clip_open_clip",
        "tiny_clipa_vit_patch14",
        lambda sd: openai_clip(sd, final_norm="fc_norm"),
        "w.pth",
        "openai_clip",
        ["patch_embed.proj.bias"],
    ),
    ("dinov2", "tiny_dinov2_vit_patch14", lambda sd: dinov2_original(sd, registers=False), "w.pth", "dinov2", []),
    (
        "dinov2_reg",
        "tiny_dinov2_vit_patch14_reg4",
        lambda sd: dinov2_original(sd, registers=True),
        "w.pth",
        "dinov2",
        [],
    ),
    ("hf_clip", "tiny_clip_vit_patch16", hf_clip, "w.safetensors", "hf_clip", []),
    ("hf_siglip", "tiny_siglip_vit_patch16", hf_siglip, "w.safetensors", "hf_siglip", []),
    # transformers >= 5 SiglipVisionModel: no ``vision_model.`` prefix
    (
        "hf_siglip_vision",
        "tiny_siglip_vit_patch16",
        lambda sd: hf_siglip(sd, prefix=""),
        "w.safetensors",
        "hf_siglip",
        [],
    ),
    (
        "hf_dinov2",
        "tiny_dinov2_vit_patch14",
        lambda sd: hf_dinov2(sd, registers=False),
        "w.safetensors",
        "hf_dinov2",
        [],
    ),
    (
        "hf_dinov2_reg",
        "tiny_dinov2_vit_patch14_reg4",
        lambda sd: hf_dinov2(sd, registers=True),
        "w.safetensors",
        "hf_dinov2",
        [],
    ),
    (
        "c_radio_hf",
        "c_radio_tiny_patch16",
        lambda sd: cradio_hf(sd, stale_registers=2),
        "w.safetensors",
        "c_radio_hf",
        [],
    ),
    ("c_radio_export", "c_radio_tiny_patch16", lambda sd: sd, "w.safetensors", "c_radio", []),
]


def _native_and_public(name, writer, zero, save, fname):
    model = distinct_weights(name)
    with torch.no_grad():
        for key in zero:
            model.state_dict()[key].zero_()
    native = save(model.state_dict(), "native.safetensors")
    public = save(writer(model.state_dict()), fname)
    return native, public


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_public_layout_matches_native(case, save):
    _, name, writer, fname, fmt, zero = case
    native_path, public_path = _native_and_public(name, writer, zero, save, fname)
    info = get_model_info(name)
    # A non-square input at a size other than the checkpoint's: position embeddings must follow.
    x = torch.randn(2, 3, info.img_size, info.img_size + 2 * info.patch_size)
    kw = dict(input_size=info.img_size, dtype=torch.float32)
    ref = FrozenTeacher(name, native_path, **kw)(x)
    teacher = FrozenTeacher(name, public_path, **kw)
    got = teacher(x)
    assert teacher.load_report.ok and teacher.load_report.fmt == fmt
    # Built at the checkpoint's own size: nothing is resampled (a text tower's positions do not count), and
    # no tensor of the model (a MAP head included) is taken for a classifier that is not built.
    assert not any("resampled" in note for note in teacher.load_report.notes), teacher.load_report.notes
    assert NOT_BUILT not in teacher.load_report.dropped.values()
    assert torch.allclose(got.summary, ref.summary, atol=1e-5)
    assert torch.allclose(got.spatial, ref.spatial, atol=1e-5)
    grid = (info.img_size // info.patch_size, info.img_size // info.patch_size + 2)
    assert got.spatial.shape == (2, teacher.embed_dim, *grid)
    assert got.summary.shape == (2, teacher.summary_dim)


def test_text_towers_and_tokens_are_reported_as_ignored(save):
    _, public = _native_and_public("tiny_clip_vit_patch16", hf_clip, [], save, "w.safetensors")
    report = FrozenTeacher("tiny_clip_vit_patch16", public, input_size=64).load_report
    assert "text_model.embeddings.token_embedding.weight" in report.dropped
    assert "logit_scale" in report.dropped
    _, public = _native_and_public(
        "tiny_dinov2_vit_patch14_reg4", lambda sd: dinov2_original(sd, registers=True), [], save, "d.pth"
    )
    assert "mask_token" in FrozenTeacher("tiny_dinov2_vit_patch14_reg4", public, input_size=56).load_report.dropped


def test_position_embeddings_resampled_to_input_size(save):
    # A timm-resampled teacher (the demo entry) is built for its input size: the grid is resampled at load.
    native, _ = _native_and_public("demo_vit_tiny_patch14", lambda sd: sd, [], save, "unused.safetensors")
    teacher = FrozenTeacher("demo_vit_tiny_patch14", native, input_size=98, dtype=torch.float32)
    assert teacher.model.pos_embed.shape[1] == (98 // 14) ** 2  # 4x4 grid in the file -> 7x7
    assert "position embeddings resampled from a 4x4 to a 7x7 grid (input size (98, 98))" in teacher.load_report.notes
    assert teacher(torch.randn(1, 3, 98, 70)).spatial.shape == (1, 128, 7, 5)
    # A reference-grid teacher (CLIP: models/reference_grid.py) keeps the file's grid and resamples it per
    # input; OpenAI CLIP files also hold the text tower's positions [77, C], which are not the image grid.
    _, public = _native_and_public("tiny_clip_vit_patch16", openai_clip, [], save, "clip.pt")
    clip = FrozenTeacher("tiny_clip_vit_patch16", public, input_size=128)
    assert clip.model.pos_embed.shape[1] == 1 + 4 * 4
    assert not [n for n in clip.load_report.notes if "resampled" in n]
    assert clip(torch.randn(1, 3, 128, 96)).spatial.shape == (1, 64, 8, 6)


def test_wrong_architecture_is_refused_with_key_lists(save):
    path = save(distinct_weights("tiny_dinov2_vit_patch14").state_dict(), "dino.safetensors")
    with pytest.raises(CheckpointError) as err:
        FrozenTeacher("tiny_clip_vit_patch16", path, input_size=128)
    msg = str(err.value)
    assert path in msg
    assert "missing keys" in msg and "norm_pre.weight" in msg
    assert "unexpected keys" in msg and "blocks.0.ls1.gamma" in msg
    assert "wrong-shape keys: 29 (+24 more)" in msg  # counts beyond the listed few
    # timm would resample a 14-pixel patch kernel to 16; a teacher must not be changed that way.
    assert ("patch_embed.proj.weight", (48, 3, 14, 14), (64, 3, 16, 16)) in err.value.report.mismatched
    assert ("pos_embed", (1, 17, 48), (1, 17, 64)) in err.value.report.mismatched
    # A model built for another size compares the file's grid after resampling, and reports the file's shape.
    with pytest.raises(CheckpointError) as err:
        FrozenTeacher("demo_vit_tiny_patch16", path, input_size=128)
    assert ("pos_embed", (1, 17, 48), (1, 65, 96)) in err.value.report.mismatched


def test_wrong_size_is_refused_before_allocating_the_big_model(save):
    path = save(distinct_weights("c_radio_tiny_patch16").state_dict(), "tiny.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong-shape keys: \d+"):
        FrozenTeacher("c_radio_v3_vit_base_patch16_reg4_dinov2", path, input_size=224)


def test_non_strict_loads_matching_tensors_and_reports_the_rest(save):
    model = distinct_weights("demo_vit_tiny_patch16")
    state = dict(model.state_dict())
    state.pop("blocks.1.mlp.fc2.bias")
    state["extra.weight"] = torch.zeros(3)
    path = save(state, "partial.safetensors")
    with pytest.raises(CheckpointError, match="blocks.1.mlp.fc2.bias"):
        FrozenTeacher("demo_vit_tiny_patch16", path, input_size=64)
    teacher = FrozenTeacher("demo_vit_tiny_patch16", path, input_size=64, strict=False, dtype=torch.float32)
    assert teacher.load_report.missing == ["blocks.1.mlp.fc2.bias"]
    assert teacher.load_report.unexpected == ["extra.weight"]
    assert torch.equal(teacher.model.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_wrappers_prefixes_and_ema_are_unwrapped(save):
    model = distinct_weights("demo_vit_tiny_patch16")
    real = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    stale = {k: torch.zeros_like(v) for k, v in real.items()}
    path = save({"epoch": 3, "state_dict": stale, "state_dict_ema": real}, "ckpt.pth")
    state = read_state_dict(path)
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["cls_token"], model.cls_token)


def test_downstream_classifier_as_feature_teacher(save):
    model = distinct_weights("demo_vit_tiny_patch16", num_classes=10)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["neck.conv.weight"] = torch.zeros(4, 96, 1, 1)
    path = save({"model": state}, "detector.pth")
    teacher = FrozenTeacher("demo_vit_tiny_patch16", path, input_size=64, num_classes=0)
    assert "neck.conv.weight" in teacher.load_report.dropped
    assert "head.weight" in teacher.load_report.dropped  # the classifier is not built with num_classes: 0
    out = teacher(torch.randn(1, 3, 64, 64))
    assert out.logits is None and out.spatial.shape == (1, 96, 4, 4)


@pytest.mark.parametrize(
    "name, classifier",
    [("timm/resnet18", "fc"), ("timm/efficientnet_b0", "classifier"), ("tiny_siglip_vit_patch16", "head")],
)
def test_classifier_checkpoint_as_feature_teacher(save, name, classifier):
    """A classifier saved with its head (named as timm's ``pretrained_cfg['classifier']``: ResNet ``fc``,
    EfficientNet ``classifier``, ViT ``head``) loads as a feature teacher and computes the classifier's
    features; only the head is dropped (SigLIP's MAP pooling ``attn_pool`` is not a classifier)."""
    model = distinct_weights(name, num_classes=10)
    path = save(model.state_dict(), "classifier.safetensors")
    teacher = FrozenTeacher(name, path, input_size=64, dtype=torch.float32)
    assert teacher.load_report.ok
    assert teacher.load_report.dropped == {f"{classifier}.weight": NOT_BUILT, f"{classifier}.bias": NOT_BUILT}
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    if feats.dim() == 3:  # ViT tokens (no prefix tokens in SigLIP) -> map
        feats = feats.transpose(1, 2).reshape(2, -1, 64 // 16, 96 // 16)
    out = teacher(x)
    assert out.logits is None
    assert torch.allclose(out.summary, pooled, atol=1e-5)
    assert torch.allclose(out.spatial, feats, atol=1e-5)


def test_classifier_teacher_returns_its_logits(save):
    model = distinct_weights("demo_vit_tiny_patch16", num_classes=10)
    path = save(model.state_dict(), "cls.safetensors")
    teacher = FrozenTeacher("demo_vit_tiny_patch16", path, input_size=64, num_classes=10, dtype=torch.float32)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(teacher(x).logits, expected, atol=1e-5)


def test_truncated_safetensors_is_refused(save):
    path = save(distinct_weights("demo_vit_tiny_patch16").state_dict(), "w.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        FrozenTeacher("demo_vit_tiny_patch16", path, input_size=64)


def test_truncated_torch_file_is_refused(save):
    path = save(distinct_weights("demo_vit_tiny_patch16").state_dict(), "w.pth")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(str(tmp_path / "nope.pth"))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch_zip", "raw_pickle"])
def test_pickle_that_would_run_code_is_refused(tmp_path, writer):
    target = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    obj = {"w": torch.zeros(2), "x": _Payload(str(target))}
    if writer == "torch_zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert "refusing to unpickle" in str(err.value) and "--trust-pickle" in str(err.value)
    assert not target.exists()


def test_other_timm_family_with_computed_buffers(save):
    """DINOv3 is timm's EVA class (its own converter, a non-persistent rotary table): strict loading still
    reproduces the native model."""
    model = distinct_weights("dinov3_vit_small_patch16")
    path = save(model.state_dict(), "dinov3.safetensors")
    teacher = FrozenTeacher("dinov3_vit_small_patch16", path, input_size=256, dtype=torch.float32)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tokens = model.forward_features(x)
    out = teacher(x)
    assert teacher.load_report.ok and out.spatial.shape == (1, 384, 4, 6)
    assert torch.allclose(out.summary, tokens[:, 0], atol=1e-5)
    assert torch.allclose(out.spatial.flatten(2).transpose(1, 2), tokens[:, 5:], atol=1e-5)


def test_sharded_hf_checkpoint_through_its_index(save, tmp_path):
    import json

    model = distinct_weights("tiny_siglip_vit_patch16")
    layout = hf_siglip(model.state_dict())
    keys = sorted(layout)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save({k: layout[k] for k in part}, name)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {k: n for n, part in shards.items() for k in part}}))
    teacher = FrozenTeacher("tiny_siglip_vit_patch16", str(index), input_size=64)
    assert teacher.load_report.ok and teacher.load_report.fmt == "hf_siglip"
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002.safetensors not found"):
        read_state_dict(str(index))


@pytest.mark.parametrize("header_length", [0x180, 0x4B50])  # first bytes b"\x80", b"PK"
def test_safetensors_whose_header_length_looks_like_torch_is_read_as_safetensors(tmp_path, header_length):
    from safetensors.torch import save_file

    path = str(tmp_path / "w.safetensors")

    def length(pad):
        save_file({"w": torch.arange(3.0)}, path, metadata={"pad": "x" * pad})
        with open(path, "rb") as f:
            return int.from_bytes(f.read(8), "little")

    base = length(0)  # the file starts with its header length; headers are padded to 8 bytes
    pad = next(p for p in range(header_length - base - 8, header_length - base + 8) if length(p) == header_length)
    assert length(pad) == header_length
    assert torch.equal(read_state_dict(path)["w"], torch.arange(3.0))


def test_a_torch_file_named_safetensors_is_refused_with_the_fix(tmp_path):
    path = str(tmp_path / "w.safetensors")
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="named .safetensors but holds a torch.save file; rename it to .pt"):
        read_state_dict(path)


# ------------------------------------------------------------------ transformers-saved vision towers
HF_TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, patch_size=16)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _hf_saved(model, tmp_path) -> str:
    """``model`` (transformers) with every tensor moved off its init, saved with ``save_pretrained``."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval().save_pretrained(str(tmp_path / "hf"))
    return str(tmp_path / "hf" / "model.safetensors")


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_transformers_siglip_vision_model_matches_transformers(tmp_path, family):
    """transformers >= 5 ``SiglipVisionModel`` / ``Siglip2VisionModel`` save the tower without
    ``vision_model.``; the SigLIP entry loads it and computes the pooled (MAP head) and patch features of
    transformers' own forward. SigLIP2 (NaFlex) embeds patches flattened as (y, x, channel) with a Linear."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if family == "siglip":
        config = transformers.SiglipVisionConfig(**HF_TINY, image_size=64)
        theirs = transformers.SiglipVisionModel(config)
    else:
        config = transformers.Siglip2VisionConfig(**HF_TINY, num_patches=16)
        theirs = transformers.Siglip2VisionModel(config)
    path = _hf_saved(theirs, tmp_path)
    teacher = FrozenTeacher("tiny_siglip_vit_patch16", path, input_size=64, dtype=torch.float32)
    assert teacher.load_report.ok and teacher.load_report.fmt == f"hf_{family}"
    assert teacher.load_report.dropped == {}  # the MAP head (``head.*``) is loaded as attn_pool, not dropped
    x = torch.randn(2, 3, 64, 64)  # the native 4x4 grid (see docs/checkpoint_layouts.md for other sizes)
    with torch.no_grad():
        if family == "siglip":
            hidden = theirs(pixel_values=x)
        else:  # the processor's patches: [B, h*w, p*p*3], row-major over the grid
            patches = x.reshape(2, 3, 4, 16, 4, 16).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 768)
            hidden = theirs(
                pixel_values=patches,
                pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
                spatial_shapes=torch.tensor([[4, 4], [4, 4]]),
            )
    out = teacher(x)
    assert relative_error(out.summary, hidden.pooler_output) < 1e-5
    assert relative_error(out.spatial, hidden.last_hidden_state.transpose(1, 2).reshape(2, 64, 4, 4)) < 1e-5


def test_transformers_clip_vision_models_match_transformers(tmp_path):
    """transformers >= 5 ``CLIPVisionModel`` saves the tower without ``vision_model.`` and without the
    projection; ``CLIPVisionModelWithProjection`` keeps the prefix and adds ``visual_projection``. Both
    compute transformers' own features; the projection-less file is refused by an entry that projects."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        **HF_TINY, image_size=64, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32
    )
    x = torch.randn(2, 3, 64, 64)

    theirs = transformers.CLIPVisionModel(config)
    path = _hf_saved(theirs, tmp_path / "plain")
    with pytest.raises(CheckpointError) as err:
        FrozenTeacher("tiny_clip_vit_patch16", path, input_size=64)
    assert err.value.report.missing == ["head.weight", "head.bias"] and not err.value.report.unexpected
    model = create_model("tiny_clip_vit_patch16", img_size=64)
    model.reset_classifier(0)  # the same tower without its projection
    report = load_into(model, path)
    assert report.ok and report.fmt == "hf_clip" and report.dropped == {}
    with torch.no_grad():
        hidden = theirs(pixel_values=x)
        # transformers applies post_layernorm to the pooled CLS token only; timm to every token
        tokens = theirs.post_layernorm(hidden.last_hidden_state)
        summary, spatial, _ = teacher_features(model.eval(), x, 16)
    assert relative_error(summary, hidden.pooler_output) < 1e-5
    assert relative_error(spatial, tokens[:, 1:].transpose(1, 2).reshape(2, 64, 4, 4)) < 1e-5

    theirs = transformers.CLIPVisionModelWithProjection(config)
    path = _hf_saved(theirs, tmp_path / "projected")
    teacher = FrozenTeacher("tiny_clip_vit_patch16", path, input_size=64, dtype=torch.float32)
    assert teacher.load_report.ok and teacher.load_report.fmt == "hf_clip"
    with torch.no_grad():
        embeds = theirs(pixel_values=x).image_embeds
    assert relative_error(teacher(x).summary, embeds) < 1e-5
