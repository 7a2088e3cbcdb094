"""Spec loading: the seed spec, overrides, per-teacher fallback, and the error messages."""

import os

import pytest

from radio.errors import SpecError
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_SPEC = os.path.join(REPO, "specs", "radio_multiteacher.yaml")
QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


MINIMAL = """
results_dir: /tmp/out
model: {backbone: {type: c_radio_tiny_patch16}}
dataset:
  img_size: 64
  train_dataset:
    tar_data_sources: [{root_dir: /data/a}]
distill:
  loss_lambda: 0.7
  teacher:
    - model: {backbone: {type: demo_vit_tiny_patch16}}
      pretrained_teacher_model_path: /w/a.safetensors
"""


def test_seed_spec_resolves_per_teacher_settings_from_globals():
    cfg = load_run_config(SEED_SPEC, [])
    first, second = resolve_teachers(cfg)
    assert (first.mode, first.input_size, first.loss_type, first.loss_lambda) == ("spatial", 432, "BALANCED", 0.5)
    assert first.norm_mean == [0.485, 0.456, 0.406] and first.norm_std == [0.229, 0.224, 0.225]
    assert (second.mode, second.loss_type, second.loss_lambda) == ("summary", "BALANCED", 0.5)
    assert second.norm_mean == [0.5, 0.5, 0.5] and second.norm_std == [0.5, 0.5, 0.5]
    # No input_size: matches the student resolution, aligned to the teacher's patch 14.
    assert second.match_student_resolution and second.input_size == 224
    assert not first.match_student_resolution
    assert cfg.dataset.train_dataset.tar_data_sources[0].scale_factor == 2.0


def test_overrides_win_over_the_file_including_list_items():
    cfg = load_run_config(SEED_SPEC, ["train.max_steps=7", "distill.teacher.1.loss_type=cs", "results_dir=/x"])
    assert cfg.train.max_steps == 7 and cfg.results_dir == "/x"
    assert resolve_teachers(cfg)[1].loss_type == "CS"
    assert resolve_teachers(cfg)[0].loss_type == "BALANCED"


def test_unset_teacher_fields_fall_back_to_globals_and_dataset_normalisation(tmp_path):
    cfg = load_run_config(write(tmp_path, MINIMAL), [])
    (teacher,) = resolve_teachers(cfg)
    assert teacher.loss_lambda == 0.7
    assert teacher.norm_mean == list(cfg.dataset.augmentation.norm_mean)  # not raw pixels
    assert teacher.mode == "combo" and teacher.loss_type == "BALANCED"  # auto, teacher has both kinds
    assert teacher.input_size == 64


def test_single_teacher_mapping_is_a_list_of_one(tmp_path):
    text = MINIMAL.replace("  teacher:\n    - model:", "  teacher:\n    model:").replace(
        "      pretrained_teacher_model_path", "    pretrained_teacher_model_path"
    )
    cfg = load_run_config(write(tmp_path, text), [])
    assert len(cfg.distill.teacher) == 1
    assert cfg.distill.teacher[0].model.backbone.type == "demo_vit_tiny_patch16"


def test_loss_type_is_case_insensitive(tmp_path):
    cfg = load_run_config(write(tmp_path, MINIMAL), ["distill.loss_type=balanced"])
    assert resolve_teachers(cfg)[0].loss_type == "BALANCED"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["distill.teachr=[]"], ["distill.teachr", "distill.teacher"]),
        (["dataset.batch_size=abc"], ["dataset.batch_size", "abc"]),
        (["distill.loss_type=FOO"], ["distill.loss_type", "FOO", "BALANCED"]),
        (["train.optim.policy=cosin"], ["train.optim.policy", "cosine", "multistep"]),
        (["model.backbone.type=c_radio_tiny_patch61"], ["model.backbone.type", "c_radio_tiny_patch16"]),
        (["distill.teacher.0.mode=logits"], ["distill.teacher[0]", "num_classes"]),
        (["dataset.img_size=70"], ["dataset.img_size", "patch size 16"]),
        (["train.optim.policy=step"], ["policy_params.step_size"]),
        (["batch_size"], ["key=value"]),
        (["distill.teacher.0.adaptor=featsharp"], ["distill.teacher[0].adaptor", "upsampler_checkpoint"]),
        (["distill.teacher.0.adaptor=featsharpp"], ["distill.teacher[0].adaptor", "featsharp"]),
        (["distill.teacher.0.do_upsample=true"], ["distill.teacher[0]", "adaptor: featsharp"]),
        (
            ["distill.teacher.0.adaptor=featsharp", "distill.teacher.0.upsampler_checkpoint=/x.pth"],
            ["distill.teacher[0].adaptor", "input_size"],
        ),
        (["distill.teacher.0.mosaic=0"], ["distill.teacher[0].mosaic", "> 0"]),
        (["dataset.augmentation.stochastic_resolutions=[48, 64]"], ["stochastic_resolutions takes a mapping"]),
        (
            ["distill.teacher.0.mosaic=2", "distill.teacher.0.mode=spatial", "distill.teacher.0.input_size=50"],
            ["teacher resolution 48 (input_size 50 rounded to its patch size)"],
        ),
        (["distill.teacher.0.mosaic=2"], ["distill.teacher[0].mosaic", "mode spatial"]),
        (
            ["distill.teacher.0.mosaic=2", "distill.teacher.0.mode=spatial", "distill.teacher.0.input_size=48"],
            ["distill.teacher[0].mosaic=2", "multiple of mosaic x patch size = 32"],
        ),
        (["distill.teacher.0.name=student"], ["distill.teacher[0].name", "student"]),
        (["distill.teacher.0.norm_std=[0,0,0]"], ["distill.teacher[0].norm_std"]),
        (["distill.temperature=0"], ["distill.temperature", "> 0"]),
        (["distill.phi_s.freeze_after_steps=0"], ["distill.phi_s.freeze_after_steps"]),
        (["train.optim.policy=step", "train.optim.policy_params={step_size: 0.5}"], ["step_size", "whole number"]),
        (["train.optim.betas=[2,-1]"], ["train.optim.betas", "[0, 1)"]),
        (["distill.teacher.0.summary_token_idx=-1"], ["summary_token_idx"]),
        (
            ["distill.teacher.0.match_student_resolution=true", "distill.teacher.0.input_size=128"],
            ["distill.teacher[0].input_size", "ignored"],
        ),
        (
            ["distill.teacher.0.mode=spatial", "distill.teacher.0.summary_loss_type=angle"],
            ["distill.teacher[0].summary_loss_type", "ignored"],
        ),
        (
            ["distill.teacher.0.mode=summary", "distill.teacher.0.fd_loss_weight=0.5"],
            ["distill.teacher[0].fd_loss_weight", "combo"],
        ),
        (
            ["dataset.augmentation.stochastic_resolutions={64: 0.5, 128: 0.2}"],
            ["dataset.augmentation.stochastic_resolutions", "sum to 0.7", "must sum to 1"],
        ),
        (["distill.teacher.0.stochastic_resolutions={64: 2.0}"], ["distill.teacher[0].stochastic_resolutions"]),
    ],
)
def test_bad_values_name_the_field_and_what_is_valid(tmp_path, overrides, expected):
    with pytest.raises(SpecError) as info:
        load_run_config(write(tmp_path, MINIMAL), overrides)
    for text in expected:
        assert text in str(info.value)


def test_unknown_key_inside_a_teacher_names_its_index(tmp_path):
    text = MINIMAL + "      loss_tpe: L1\n"
    with pytest.raises(SpecError) as info:
        load_run_config(write(tmp_path, text), [])
    assert "distill.teacher[0].loss_tpe" in str(info.value)
    assert "loss_type" in str(info.value)


def test_misspelt_key_in_file_suggests_the_closest(tmp_path):
    with pytest.raises(SpecError) as info:
        load_run_config(write(tmp_path, MINIMAL.replace("  loss_lambda: 0.7", "  teachr: []\n  loss_lambda: 0.7")), [])
    assert "distill.teachr" in str(info.value) and "'distill.teacher'" in str(info.value)


def test_missing_results_dir_and_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="results_dir"):
        load_run_config(write(tmp_path, MINIMAL.replace("results_dir: /tmp/out\n", "")), [])
    with pytest.raises(SpecError, match="does not exist"):
        load_run_config(str(tmp_path / "nope.yaml"), [])


def test_quickstart_spec_is_valid():
    cfg = load_run_config(QUICKSTART_SPEC, [])
    names = [t.name for t in resolve_teachers(cfg)]
    assert names == ["demo_a", "demo_b"]


def test_default_teacher_names_are_usable_as_keys_and_bad_names_refused(tmp_path):
    spec = write(tmp_path, MINIMAL)
    cfg = load_run_config(spec, ["distill.teacher.0.model.backbone.type=timm/vit_tiny_patch16_224.augreg_in21k"])
    assert resolve_teachers(cfg)[0].name == "vit_tiny_patch16_224_augreg_in21k"
    with pytest.raises(SpecError, match=r"distill.teacher\[0\].name"):
        load_run_config(spec, ["distill.teacher.0.name=my.teacher"])


def test_automatic_summary_slots_skip_explicit_ones(tmp_path):
    text = (
        MINIMAL
        + """    - model: {backbone: {type: demo_vit_tiny_patch14}}
      pretrained_teacher_model_path: /w/b.safetensors
      mode: summary
"""
    )
    cfg = load_run_config(
        write(tmp_path, text), ["distill.teacher.0.summary_token_idx=0", "distill.teacher.0.mode=summary"]
    )
    first, second = resolve_teachers(cfg)
    assert (first.summary_token_idx, second.summary_token_idx) == (0, 1)
    cfg = load_run_config(
        write(tmp_path, text), ["distill.teacher.0.summary_token_idx=1", "distill.teacher.0.mode=summary"]
    )
    first, second = resolve_teachers(cfg)
    assert (first.summary_token_idx, second.summary_token_idx) == (1, 0)


def test_two_teachers_with_one_name_are_refused(tmp_path):
    two = (
        MINIMAL
        + """    - model: {backbone: {type: demo_vit_tiny_patch16}}
      pretrained_teacher_model_path: /w/b.safetensors
"""
    )
    with pytest.raises(SpecError, match=r"distill.teacher\[1\] and distill.teacher\[0\] are both called 'x'"):
        load_run_config(write(tmp_path, two), ["distill.teacher.0.name=x", "distill.teacher.1.name=x"])


def test_a_key_given_twice_in_the_file_is_refused(tmp_path):
    with pytest.raises(SpecError, match="'results_dir' is given twice"):
        load_run_config(write(tmp_path, MINIMAL + "results_dir: /tmp/other\n"), [])


def test_a_binary_file_as_the_spec_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(SpecError, match="not a text file"):
        load_run_config(str(path), [])


def test_a_teachers_own_bad_loss_type_names_that_teachers_field(tmp_path):
    with pytest.raises(SpecError, match=r"distill\.teacher\[0\]\.loss_type \(teacher demo_a\): 'MSEE' is not a valid value"):
        load_run_config(QUICKSTART_SPEC, ["distill.teacher.0.loss_type=MSEE"])


def test_an_override_of_a_teacher_the_spec_does_not_list_says_how_many_there_are():
    with pytest.raises(SpecError, match=r"distill\.teacher\[5\], but the spec lists 2 teacher\(s\) \(indices 0\.\.1\)"):
        load_run_config(QUICKSTART_SPEC, ["distill.teacher.5.loss_type=MSE"])


@pytest.mark.parametrize(
    "backbone, mean",
    [
        ("dinov2_vit_small_patch14", [0.485, 0.456, 0.406]),
        ("sam_vit_b", [0.485, 0.456, 0.406]),
        ("siglip_vit_base_patch16_224", [0.5, 0.5, 0.5]),
        ("clip_vit_base_patch16_224", [0.48145466, 0.4578275, 0.40821073]),
        ("timm/resnet18", [0.485, 0.456, 0.406]),
        ("demo_vit_tiny_patch16", [0.1, 0.2, 0.3]),  # no public weights: the dataset's
    ],
)
def test_an_unset_teacher_normalisation_is_the_one_its_weights_were_trained_with(tmp_path, backbone, mean):
    spec = write(tmp_path, MINIMAL.replace("demo_vit_tiny_patch16", backbone))
    cfg = load_run_config(spec, ["dataset.augmentation.norm_mean=[0.1,0.2,0.3]", "distill.mode=spatial"])
    assert resolve_teachers(cfg)[0].norm_mean == pytest.approx(mean)
    cfg = load_run_config(spec, ["distill.teacher.0.norm_mean=[0.7,0.7,0.7]", "distill.mode=spatial"])
    assert resolve_teachers(cfg)[0].norm_mean == [0.7, 0.7, 0.7]  # the spec's own value wins


def test_the_phi_s_radio_teacher_set_example_resolves_each_teacher_at_its_own_resolution():
    cfg = load_run_config(os.path.join(REPO, "specs", "phi_s_radio_teachers.yaml"), [])
    teachers = {t.name: t for t in resolve_teachers(cfg)}
    assert {n: (t.input_size, t.mode) for n, t in teachers.items()} == {
        "dfn_clip": (378, "combo"),
        "siglip": (378, "combo"),  # 384 aligned to its 14 px patches: the same 27x27 grid
        "dinov2": (224, "combo"),
        "sam": (1024, "spatial"),
    }
    assert teachers["siglip"].norm_mean == [0.5, 0.5, 0.5] and teachers["sam"].norm_std == [0.229, 0.224, 0.225]


def test_a_rounded_teacher_input_size_is_said(tmp_path):
    from radio.run.teachers import resolution_notes

    cfg = load_run_config(write(tmp_path, MINIMAL), ["distill.teacher.0.input_size=70"])
    (teacher,) = resolve_teachers(cfg)
    assert teacher.input_size == 64
    assert resolution_notes(cfg, [teacher]) == [
        "note: distill.teacher[0].input_size=70 is run at 64, the nearest multiple of demo_p16's "
        "patch size 16 (4x4 tokens)."
    ]
    cfg = load_run_config(write(tmp_path, MINIMAL), ["distill.teacher.0.input_size=64"])
    assert resolution_notes(cfg, resolve_teachers(cfg)) == []


def test_the_multi_resolution_featsharp_example_resolves():
    cfg = load_run_config(os.path.join(REPO, "specs", "radio_multires_featsharp.yaml"), [])
    teachers = {t.name: t for t in resolve_teachers(cfg)}
    dinov2, sam = teachers["dinov2"], teachers["sam"]
    assert (dinov2.adaptor, dinov2.do_upsample, dinov2.input_size) == ("featsharp", True, 448)
    assert dinov2.upsampler_checkpoint.endswith(".pth") and not dinov2.match_student_resolution
    assert (sam.mosaic, sam.input_size, sam.mode) == (2, 1024, "spatial")
    assert dict(cfg.dataset.augmentation.stochastic_resolutions) == {256: 0.25, 432: 0.5, 768: 0.25}
