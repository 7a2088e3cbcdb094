"""Canonical names for loss types, modes, summary losses and feature normalisers (docs/losses.md).

Pure Python (no torch): the teacher resolution (``radio/run/teachers.py``) calls these while validating
a spec, before anything heavy is imported. Every function that accepts a user string is case-insensitive
and raises ``SpecError`` naming the field path, the bad value and the valid values.
"""

from typing import Optional

from radio.errors import SpecError

# Loss types. L2 and MSE are the same loss; they stay distinct names because `mode: auto` routes them
# differently (TAO's rule).
LOSS_TYPES = ("KL", "CE", "L1", "L2", "MSE", "FD", "CS", "BALANCED")
LOGITS_ONLY_LOSS_TYPES = ("KL", "CE")  # distributions over classes: meaningless on feature vectors

# The feature kinds each resolved mode compares, one loss term per kind (radio/losses/criterion.py).
MODE_FEATURES = {
    "logits": ("logits",),
    "summary": ("summary",),
    "spatial": ("spatial",),
    "combo": ("summary", "spatial"),
}
MODES = (*MODE_FEATURES, "auto")
SUMMARY_LOSS_TYPES = ("cosine", "angle", "ce", "tangent_sphere")
FEATURE_NORMALIZERS = ("phi_s", "standardize", "none")

# Default loss per resolved mode when no loss type is set (docs/losses.md). In `combo` the loss type applies to
# the spatial term (the summary term uses `summary_loss_type`), so it shares spatial's default.
DEFAULT_LOSS_TYPE = {"logits": "KL", "summary": "CS", "spatial": "BALANCED", "combo": "BALANCED"}

# TAO's `mode: auto` rule when a loss type is set.
_AUTO_MODE_FOR_LOSS = {
    "KL": "logits",
    "CE": "logits",
    "BALANCED": "spatial",
    "MSE": "spatial",
    "L1": "summary",
    "L2": "summary",
    "FD": "summary",
    "CS": "summary",
}


def _choice(value: str, valid: tuple, field: str, canonical_upper: bool) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{field}: expected a string, got {value!r}; valid values: {', '.join(valid)}")
    key = value.strip().upper() if canonical_upper else value.strip().lower()
    if key not in valid:
        raise SpecError(f"{field}: {value!r} is not a valid value; valid values (case-insensitive): {', '.join(valid)}")
    return key


def normalize_loss_type(value: str, field: str = "distill.loss_type") -> str:
    """``'balanced'`` -> ``'BALANCED'``; raises ``SpecError`` listing ``LOSS_TYPES`` otherwise."""
    return _choice(value, LOSS_TYPES, field, canonical_upper=True)


def normalize_mode(value: str, field: str = "distill.mode") -> str:
    """``'Spatial'`` -> ``'spatial'``; raises ``SpecError`` listing ``MODES`` otherwise."""
    return _choice(value, MODES, field, canonical_upper=False)


def normalize_summary_loss_type(value: str, field: str = "distill.summary_loss_type") -> str:
    """``'Cosine'`` -> ``'cosine'``; raises ``SpecError`` listing ``SUMMARY_LOSS_TYPES`` otherwise."""
    return _choice(value, SUMMARY_LOSS_TYPES, field, canonical_upper=False)


def normalize_feature_normalizer(value: str, field: str = "distill.feature_normalizer") -> str:
    """``'PHI_S'`` -> ``'phi_s'``; raises ``SpecError`` listing ``FEATURE_NORMALIZERS`` otherwise."""
    return _choice(value, FEATURE_NORMALIZERS, field, canonical_upper=False)


def default_loss_type(mode: str) -> str:
    """The loss used when none is set, for a resolved mode (not ``auto``)."""
    return DEFAULT_LOSS_TYPE[normalize_mode(mode)]


def resolve_mode(
    mode: str,
    loss_type: Optional[str],
    teacher_has_summary: bool,
    num_classes: int,
    *,
    field_prefix: str = "distill",
    loss_field_prefix: Optional[str] = None,
) -> str:
    """Resolve ``mode: auto`` and reject impossible mode/loss/teacher combinations (docs/losses.md).

    ``auto`` with a loss type follows TAO's rule (KL/CE -> logits, BALANCED/MSE -> spatial,
    L1/L2/FD/CS -> summary); with none, ``combo`` when the teacher yields a summary besides its spatial
    map, else ``spatial`` (every registered teacher yields a spatial map). ``field_prefix`` names the
    config node of the mode in errors, e.g. ``distill.teacher[1]``; ``loss_field_prefix`` that of the loss
    type when it was set elsewhere (a teacher's own loss type under the global mode).
    Returns one of ``logits``, ``summary``, ``spatial``, ``combo``.
    """
    mode_field, loss_field = f"{field_prefix}.mode", f"{loss_field_prefix or field_prefix}.loss_type"
    requested = normalize_mode(mode, mode_field)
    loss = None if loss_type is None else normalize_loss_type(loss_type, loss_field)

    if requested != "auto":
        resolved, why = requested, f"{mode_field} is {requested!r}"
    elif loss is not None:
        resolved = _AUTO_MODE_FOR_LOSS[loss]
        why = f"{mode_field} 'auto' with {loss_field} {loss!r} resolves to {resolved!r}"
    else:
        resolved = "combo" if teacher_has_summary else "spatial"
        why = f"{mode_field} 'auto' resolves to {resolved!r}"

    needs_summary = "summary" in MODE_FEATURES[resolved]
    if "logits" in MODE_FEATURES[resolved] and num_classes <= 0:
        raise SpecError(
            f"{why}, which needs class logits, but dataset.num_classes is {num_classes}; "
            f"set dataset.num_classes > 0 or use mode 'summary', 'spatial' or 'combo'"
        )
    if needs_summary and not teacher_has_summary:
        raise SpecError(
            f"{why}, which needs a summary vector, but this teacher yields none (spatial only): use mode 'spatial' "
            "or 'auto' for it"
        )
    if loss in LOGITS_ONLY_LOSS_TYPES and resolved != "logits":
        raise SpecError(
            f"{loss_field} {loss!r} compares class distributions and only works in mode 'logits', "
            f"but {why}; use one of {', '.join(t for t in LOSS_TYPES if t not in LOGITS_ONLY_LOSS_TYPES)}"
        )
    return resolved


def resolve_loss_type(resolved_mode: str, loss_type: Optional[str], *, field_prefix: str = "distill") -> str:
    """The canonical loss type for a resolved mode: the one set, else the mode's default."""
    if loss_type is None:
        return default_loss_type(resolved_mode)
    return normalize_loss_type(loss_type, f"{field_prefix}.loss_type")
