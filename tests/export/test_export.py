"""radio export: the backbone loads with timm and computes our features; adaptors predict teacher space."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from radio.export.adaptors import load_adaptor
from radio.export.export import export_run
from radio.export.timm_backbone import timm_model_kwargs, timm_model_name, to_timm_state_dict
from radio.export.trained_run import load_trained_run
from radio.models.cradio import RadioViT
from tests.conftest import radio_cli

SIZES = [(64, 64), (48, 96), (112, 80), (256, 256)]  # native grid, non-square both ways, the full CPE grid


@pytest.fixture(scope="module")
def exported(trained_results, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    return out, export_run(trained_results, out)


def build_timm_model(student: RadioViT, img_size: int) -> torch.nn.Module:
    """A timm NaFlexVit with ``student``'s weights, loaded strictly (checks the mapping is complete)."""
    import timm

    model = timm.create_model(timm_model_name(student), pretrained=False, **timm_model_kwargs(student, img_size))
    model.load_state_dict(to_timm_state_dict(student), strict=True)
    return model.eval()


@pytest.mark.parametrize("init_values,align_corners", [(1e-5, True), (None, False)])
def test_timm_naflexvit_equals_radiovit_in_eval_mode_at_every_size(init_values, align_corners):
    torch.manual_seed(0)
    student = RadioViT(
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_cls_tokens=2,
        num_registers=3,
        summary_idxs=(0, 1),
        cpe_max_size=128,
        init_values=init_values,
        cpe_align_corners=align_corners,
    ).eval()
    if init_values is not None:  # non-trivial layer scale, so a dropped gamma would show
        for block in student.blocks:
            block.ls1.grandma.data.uniform_(0.5, 1.5)
    timm_model = build_timm_model(student, img_size=64)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ours, _ = student.features(x)
            theirs = timm_model.forward_features(x)
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_written_timm_call_loads_the_export_offline_and_matches(exported, trained_results, monkeypatch):
    import timm  # noqa: F401  (the written call refers to it)
    from timm.data import resolve_data_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, manifest = exported
    with open(os.path.join(out, "export.json")) as f:
        assert json.load(f)["timm_call"] == manifest["timm_call"]
    assert manifest["timm_call"] in open(os.path.join(out, "README.md")).read()
    model = eval(manifest["timm_call"]).eval()  # exactly what a user copies from export.json / README.md
    run = load_trained_run(trained_results)
    for h, w in [(64, 64), (64, 96)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(
                model.forward_features(x), run.model.student.features(x)[0], atol=2e-5, rtol=1e-4
            )
    data_cfg = resolve_data_config({}, model=model)
    assert list(data_cfg["mean"]) == list(run.cfg.dataset.augmentation.norm_mean)
    assert data_cfg["input_size"] == (3, 64, 64)


@pytest.mark.slow
def test_exported_adaptors_predict_teacher_space(exported, trained_results):
    out, manifest = exported
    run = load_trained_run(trained_results)
    assert set(manifest["adaptors"]) == {"demo_a", "demo_b"}
    assert "summary" in manifest["adaptors"]["demo_a"] and "summary" not in manifest["adaptors"]["demo_b"]
    torch.manual_seed(1)
    tokens = torch.randn(2, 16, run.model.student.embed_dim)
    for name, meta in manifest["adaptors"].items():
        adaptor = load_adaptor(os.path.join(out, meta["file"]), meta)
        with torch.no_grad():
            raw = run.model.spatial_heads[name](tokens)
            expected = run.normalizers[name].inverse(raw)
            torch.testing.assert_close(adaptor.spatial(tokens), expected, atol=1e-4, rtol=1e-4)
            assert (adaptor.spatial(tokens) - raw).abs().max() > 0.1  # PHI-S really was folded in
            if adaptor.summary is not None:
                cls = tokens[:, 0]
                torch.testing.assert_close(adaptor.summary(cls), run.model.summary_heads[name](cls))
        assert meta["spatial"]["feature_normalizer_folded"] == "phi_s"


@pytest.mark.slow
def test_export_cli_end_to_end(trained_results, tmp_path):
    out = str(tmp_path / "exp")
    proc = radio_cli("export", "--results", trained_results, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "timm.create_model(" in proc.stdout
    backbone = load_file(os.path.join(out, "backbone.safetensors"))
    assert backbone["embeds.pos_embed"].dim() == 4 and "embeds.reg_token" in backbone
    for name in ("demo_a", "demo_b"):
        assert os.path.isfile(os.path.join(out, "adaptors", f"{name}.safetensors"))


@pytest.mark.slow
def test_export_bad_inputs_fail_with_one_clear_line(trained_results, tmp_path):
    missing = radio_cli("export", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr and "nope" in missing.stderr

    # A checkpoint of another model: the student's width differs.
    other = tmp_path / "other_ckpt"
    other.mkdir()
    state = load_file(os.path.join(trained_results, "checkpoints", "step_0000004", "model.safetensors"))
    state["student.patch_generator.pos_embed"] = torch.zeros(1, 16, 32)
    save_file(state, str(other / "model.safetensors"))
    wrong = radio_cli("export", "--results", trained_results, "--checkpoint", str(other), "--out", str(tmp_path / "o"))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "student.patch_generator.pos_embed" in wrong.stderr and "wrong-shape" in wrong.stderr
    assert not os.path.exists(tmp_path / "o" / "backbone.safetensors")
