"""A classification run's classifier is a deliverable: timm's head in the export, and in student_final."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from radio.export.export import export_run
from radio.export.trained_run import load_trained_run
from tests.classification_case import NUM_CLASSES, train_classification_run
from tests.conftest import radio_cli

pytestmark = pytest.mark.slow  # trains a run


@pytest.fixture(scope="module")
def classification_results(tmp_path_factory):
    return train_classification_run(str(tmp_path_factory.mktemp("classification")))


@pytest.fixture(scope="module")
def exported(classification_results, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export_cls"))
    return out, export_run(classification_results, out)


def test_timm_model_from_the_written_call_gives_the_runs_logits(exported, classification_results, monkeypatch):
    import timm  # noqa: F401  (the written call refers to it)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, manifest = exported
    assert manifest["backbone"]["classifier"]["num_classes"] == NUM_CLASSES
    assert f"num_classes={NUM_CLASSES}" in manifest["timm_call"]
    with open(os.path.join(out, "export.json")) as f:
        assert json.load(f)["timm_call"] == manifest["timm_call"]
    model = eval(manifest["timm_call"]).eval()  # what a user copies from export.json
    run = load_trained_run(classification_results)
    torch.manual_seed(0)
    for h, w in [(64, 64), (48, 96)]:
        x = torch.randn(3, 3, h, w)
        with torch.no_grad():
            expected = run.model.classifier(run.model.student(x).cls_tokens[:, 0])
            logits = model(x)
        assert logits.shape == (3, NUM_CLASSES)
        torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-4)
    assert expected.std() > 0  # logits that vary, so a head dropped by timm (zeros) or left at init would show
    backbone = load_file(os.path.join(out, "backbone.safetensors"))
    torch.testing.assert_close(backbone["head.weight"], run.model.classifier.weight)
    assert "Classifier head" in open(os.path.join(out, "README.md")).read()


def test_export_cli_names_the_classifier_head(classification_results, tmp_path):
    proc = radio_cli("export", "--results", classification_results, "--out", str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"classifier head: {NUM_CLASSES} classes" in proc.stdout
    assert "adaptor" not in proc.stdout  # a logits teacher has no adaptor


def test_student_final_holds_the_trained_classifier(classification_results):
    run = load_trained_run(classification_results)
    final = load_file(os.path.join(classification_results, "student_final.safetensors"))
    assert torch.equal(final["classifier.weight"], run.model.classifier.weight)
    assert torch.equal(final["classifier.bias"], run.model.classifier.bias)
    assert torch.equal(final["blocks.0.attn.qkv.weight"], run.model.student.blocks[0].attn.qkv.weight)
    with open(os.path.join(classification_results, "student_final.json")) as f:
        meta = json.load(f)
    assert meta["num_classes"] == NUM_CLASSES
    assert meta["classifier_keys"] == ["classifier.bias", "classifier.weight"]


def test_student_final_of_a_classification_run_initialises_a_student(classification_results):
    from radio.config.schema import BackboneConfig
    from radio.models.student import build_student

    path = os.path.join(classification_results, "student_final.safetensors")
    student = build_student(BackboneConfig(type="c_radio_tiny_patch16", pretrained_backbone_path=path), 1).eval()
    run = load_trained_run(classification_results)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(student(x).spatial, run.model.student(x).spatial)
