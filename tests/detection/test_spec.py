"""``task: detection`` specs: the shipped ones load, and each kind of mistake is one message naming the field."""

import os

import pytest
import yaml

from radio.detection.bindings import resolve_bindings
from radio.errors import SpecError
from radio.run.spec import load_run_config
from tests.conftest import REPO

SPECS = ["rtdetr_teacher.yaml", "rtdetr_distill.yaml", "detr_logits_distill.yaml"]


@pytest.mark.parametrize("name", SPECS)
def test_the_shipped_detection_specs_load(name):
    cfg = load_run_config(os.path.join(REPO, "specs", name))
    assert cfg.task == "detection"
    assert cfg.dataset.train_data_sources and cfg.dataset.val_data_sources
    if cfg.distill.teacher is not None:
        assert resolve_bindings(cfg.distill, student_family=cfg.model.family)


def base_spec(tmp_path, **sections) -> str:
    spec = {
        "task": "detection",
        "results_dir": str(tmp_path / "out"),
        "dataset": {
            "num_classes": 3,
            "train_data_sources": [{"image_dir": "images", "json_file": "train.json"}],
        },
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


TEACHER = {"teacher": {"family": "rtdetr", "backbone": "resnet18"}, "pretrained_teacher_model_path": "t"}


@pytest.mark.parametrize(
    "sections, overrides, words",
    [
        ({"model": {"hiden_dim": 64}}, [], ["unknown key 'model.hiden_dim'", "Did you mean 'model.hidden_dim'"]),
        ({"model": {"family": "rtdert"}}, [], ["model.family='rtdert'", "rtdetr, rtdetr_v2, d_fine, deformable_detr"]),
        ({}, ["dataset.num_classes=0"], ["dataset.num_classes=0", "> 0"]),
        (
            {"dataset": {"augmentation": {"train_spatial_size": [640, 600]}}},
            [],
            ["train_spatial_size", "multiples of 32"],
        ),
        ({"dataset": {"augmentation": {"multi_scales": [608, 650]}}}, [], ["multi_scales[1]=650"]),
        (
            {"distill": {"bindings": [{"teacher_module_name": "srcs"}]}},
            [],
            ["distill.bindings is set but distill.teacher"],
        ),
        ({"distill": {"teacher": {"family": "rtdetr"}}}, [], ["distill.pretrained_teacher_model_path is not set"]),
        ({"distill": {**TEACHER, "matching": "greedy"}}, [], ["distill.matching='greedy'", "hungarian, index, gt"]),
        ({"distill": {**TEACHER, "logits_kd_kind": "kl"}}, [], ["sigmoid_kl, sigmoid_bce, softmax_kl"]),
        ({"model": {"hidden_dim": 30}}, [], ["model.hidden_dim=30", "attention_heads=8"]),
        ({"model": {"load_teacher_enc_dec": True}}, [], ["model.load_teacher_enc_dec is set but distill.teacher"]),
        ({}, ["task=segmentation"], ["task='segmentation'", "distill, detection"]),
        ({}, ["train.optim.optim=adamx"], ["train.optim.optim='adamx'"]),
        (
            {
                "distill": {
                    **TEACHER,
                    "matching": "index",
                    "bindings": [{"teacher_module_name": "pred_logits", "criterion": "KL"}],
                }
            },
            ["model.num_queries=100"],
            ["distill.matching=index", "model.num_queries=100 and distill.teacher.num_queries=300"],
        ),
        ({"model": {"family": "deformable_detr", "decoder_layers": 1}}, [], ["model.decoder_layers=1", "at least 2"]),
    ],
)
def test_a_mistake_is_one_message_naming_the_field(tmp_path, sections, overrides, words):
    with pytest.raises(SpecError) as caught:
        load_run_config(base_spec(tmp_path, **sections), overrides)
    for word in words:
        assert word in str(caught.value)


def test_num_classes_must_be_given(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"task": "detection", "results_dir": "out"}))
    with pytest.raises(SpecError, match="dataset.num_classes must be set"):
        load_run_config(str(spec))


def test_a_detection_spec_needs_training_data(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"task": "detection", "results_dir": "out", "dataset": {"num_classes": 2}}))
    with pytest.raises(SpecError, match="dataset.train_data_sources is empty.*radio coco-demo"):
        load_run_config(str(spec))


def test_the_task_override_selects_the_schema(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "results_dir": "out",
                "dataset": {"num_classes": 2, "train_data_sources": [{"image_dir": "i", "json_file": "j"}]},
            }
        )
    )
    cfg = load_run_config(str(spec), ["task=detection"])
    assert cfg.task == "detection" and cfg.model.family == "rtdetr"
    with pytest.raises(SpecError, match="unknown key 'dataset.train_data_sources'"):
        load_run_config(str(spec))  # the backbone schema has no such field
