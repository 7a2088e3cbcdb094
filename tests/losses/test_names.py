"""Loss-type / mode names and the mode resolution of docs/losses.md."""

import subprocess
import sys

import pytest

from radio.errors import SpecError
from radio.losses.names import (
    LOSS_TYPES,
    default_loss_type,
    normalize_feature_normalizer,
    normalize_loss_type,
    normalize_mode,
    normalize_summary_loss_type,
    resolve_loss_type,
    resolve_mode,
)


@pytest.mark.parametrize("raw", ["balanced", "Balanced", "BALANCED", " balanced "])
def test_loss_type_is_case_insensitive(raw):
    assert normalize_loss_type(raw) == "BALANCED"


def test_every_loss_type_round_trips_in_lower_case():
    assert [normalize_loss_type(t.lower()) for t in LOSS_TYPES] == list(LOSS_TYPES)


def test_bad_loss_type_names_field_value_and_valid_values():
    with pytest.raises(SpecError) as err:
        normalize_loss_type("huber", field="distill.teacher[0].loss_type")
    msg = str(err.value)
    assert "distill.teacher[0].loss_type" in msg and "'huber'" in msg
    assert all(t in msg for t in LOSS_TYPES)


def test_other_enumerations():
    assert normalize_mode("Combo") == "combo"
    assert normalize_summary_loss_type("Tangent_Sphere") == "tangent_sphere"
    assert normalize_feature_normalizer("PHI_S") == "phi_s"
    bad_values = [
        (normalize_mode, "pixels"),
        (normalize_summary_loss_type, "l2"),
        (normalize_feature_normalizer, "pca"),
    ]
    for fn, bad in bad_values:
        with pytest.raises(SpecError, match="valid values"):
            fn(bad)


def test_default_loss_per_mode():
    assert default_loss_type("logits") == "KL"
    assert default_loss_type("summary") == "CS"
    assert default_loss_type("spatial") == "BALANCED"
    assert resolve_loss_type("summary", None) == "CS"
    assert resolve_loss_type("spatial", "mse") == "MSE"


# TAO's auto rule with a loss type set; the teacher yields everything so no combination is impossible.
@pytest.mark.parametrize(
    "loss, expected",
    [
        ("KL", "logits"),
        ("ce", "logits"),
        ("BALANCED", "spatial"),
        ("mse", "spatial"),
        ("L1", "summary"),
        ("l2", "summary"),
        ("FD", "summary"),
        ("cs", "summary"),
    ],
)
def test_auto_with_loss_type(loss, expected):
    assert resolve_mode("auto", loss, True, num_classes=10) == expected


def test_auto_without_loss_type_depends_on_teacher_outputs():
    assert resolve_mode("AUTO", None, True, 0) == "combo"
    assert resolve_mode("auto", None, False, 0) == "spatial"  # a teacher without a summary (SAM-like)


def test_explicit_mode_is_kept():
    assert resolve_mode("Spatial", "BALANCED", False, 0) == "spatial"
    # The seed example: global loss BALANCED, a teacher distilled on its summary only.
    assert resolve_mode("summary", "BALANCED", True, 0) == "summary"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("combo", None, False, 0), ["distill.teacher[1].mode", "'combo'", "summary vector"]),
        (("summary", None, False, 0), ["summary vector"]),
        (("auto", "cs", False, 0), ["'auto'", "'CS'", "'summary'", "summary vector"]),
        (("logits", None, True, 0), ["dataset.num_classes", "0"]),
        (("auto", "KL", True, 0), ["'auto'", "'KL'", "'logits'", "dataset.num_classes"]),
        (("spatial", "KL", True, 10), ["distill.teacher[1].loss_type", "'KL'", "only works in mode 'logits'"]),
        (("summary", "ce", True, 10), ["'CE'", "only works in mode 'logits'"]),
    ],
)
def test_impossible_combinations_are_rejected(args, fragments):
    with pytest.raises(SpecError) as err:
        resolve_mode(*args, field_prefix="distill.teacher[1]")
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.slow
def test_names_module_does_not_import_torch():
    code = "import sys, radio.losses.names; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
