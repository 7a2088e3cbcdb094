"""Default teacher names come from the registry's short names; enum errors name the field the user set."""

import os

import pytest

from radio.errors import SpecError
from radio.models.registry import ModelInfo, get_model_info, list_models, register_model
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


SPEC = """
results_dir: /tmp/out
model: {{backbone: {{type: c_radio_tiny_patch16}}}}
dataset:
  img_size: 64
  train_dataset: {{tar_data_sources: [{{root_dir: /data/a}}]}}
distill:
  teacher:
{teachers}
"""


def names(tmp_path, *types: str, named: dict = None) -> list:
    """The resolved names of one teacher per registry type, unnamed unless ``named`` ({index: name}) says."""
    teachers = "".join(
        f"    - {{model: {{backbone: {{type: {t}}}}}, pretrained_teacher_model_path: /w/{i}.safetensors"
        + (f", name: {named[i]}" if named and i in named else "")
        + "}\n"
        for i, t in enumerate(types)
    )
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(teachers=teachers))
    return [t.name for t in resolve_teachers(load_run_config(str(path), []))]


def test_every_registry_entry_has_a_unique_short_name_usable_as_a_teacher_name():
    from radio.run.teachers import _NAME, _RESERVED_NAMES

    short = {name: get_model_info(name).short_name for name in list_models()}
    assert all(short.values()), [n for n, s in short.items() if not s]
    assert len(set(short.values())) == len(short), sorted(short.values())
    for name, value in short.items():
        assert _NAME.match(value) and value not in _RESERVED_NAMES, name
        assert len(value) < len(name) or value == name, name


def test_the_registry_refuses_an_entry_without_or_with_a_taken_short_name():
    info = dict(embed_dim=8, summary_dim=8, patch_size=16, img_size=64, num_prefix_tokens=1, depth=1, num_heads=1)
    list_models()  # entries registered
    with pytest.raises(ValueError, match="share short_name 'dinov2_l'"):
        register_model(ModelInfo(name="test_only_entry", short_name="dinov2_l", **info))(lambda **kwargs: None)
    with pytest.raises(ValueError, match="has no short_name"):
        register_model(ModelInfo(name="test_only_entry", **info))(lambda **kwargs: None)
    assert "test_only_entry" not in list_models()


def test_an_unnamed_teacher_takes_its_registry_short_name(tmp_path):
    assert names(tmp_path, "dinov2_vit_large_patch14_reg4") == ["dinov2_l_reg4"]
    assert names(tmp_path, "c_radio_v3_vit_huge_patch16_reg4_dinov2", "siglip_so400m_patch14_384") == [
        "cradio_h",
        "siglip_so400m_384",
    ]


def test_unnamed_teachers_sharing_a_short_name_take_suffixes_and_explicit_names_stay(tmp_path):
    assert names(tmp_path, "demo_vit_tiny_patch16", "demo_vit_tiny_patch16") == ["demo_p16", "demo_p16_2"]
    # An explicit name is never changed: the unnamed teacher steps around it.
    assert names(tmp_path, "demo_vit_tiny_patch16", "demo_vit_tiny_patch16", named={1: "demo_p16"}) == [
        "demo_p16_2",
        "demo_p16",
    ]


def test_a_timm_type_keeps_its_timm_name_made_key_safe(tmp_path):
    assert names(tmp_path, "timm/vit_tiny_patch16_224.augreg_in21k") == ["vit_tiny_patch16_224_augreg_in21k"]


def test_two_explicit_equal_names_are_refused(tmp_path):
    with pytest.raises(SpecError, match=r"distill.teacher\[1\] and distill.teacher\[0\] are both called 'x'"):
        names(tmp_path, "demo_vit_tiny_patch16", "demo_vit_tiny_patch14", named={0: "x", 1: "x"})


@pytest.mark.parametrize(
    "override, field",
    [
        ("distill.teacher.0.loss_type=XX", "distill.teacher[0].loss_type"),
        ("distill.loss_type=XX", "distill.loss_type"),
        ("distill.teacher.0.mode=XX", "distill.teacher[0].mode"),
        ("distill.mode=XX", "distill.mode"),
        ("distill.teacher.0.summary_loss_type=XX", "distill.teacher[0].summary_loss_type"),
        ("distill.summary_loss_type=XX", "distill.summary_loss_type"),
        ("distill.teacher.1.feature_normalizer=XX", "distill.teacher[1].feature_normalizer"),
        ("distill.feature_normalizer=XX", "distill.feature_normalizer"),
    ],
)
def test_a_bad_enum_names_the_field_the_user_set(override, field):
    with pytest.raises(SpecError) as info:
        load_run_config(QUICKSTART_SPEC, [override])
    message = str(info.value)
    if field.startswith("distill.teacher"):  # the field, then the teacher by its name, once
        teacher = "demo_a" if field.startswith("distill.teacher[0]") else "demo_b"
        assert message.startswith(f"{field} (teacher {teacher}): 'XX' is not a valid value"), message
        assert message.count("teacher") == 2 and "demo_vit" not in message, message
    else:  # a global value is reported as the global field only
        assert message.startswith(f"{field}: 'XX' is not a valid value"), message
        assert "teacher" not in message, message
