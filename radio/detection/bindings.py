"""``distill.bindings`` resolved: which student feature or output learns which teacher one, by which criterion.

Two kinds (docs/detection.md): a *feature* binding names a captured feature of both detectors (an alias of
``radio/detection/features.FEATURE_ALIASES`` or a module path) and takes ``L1``, ``L2`` or TAO's ``IOU``; an
*output* binding names ``pred_logits`` (``KL``: ``distill.logits_kd_kind`` at ``distill.temperature``) or
``pred_boxes`` (``L1`` or ``GIOU``), compared on the query pairs ``distill.matching`` forms.
"""

from dataclasses import dataclass
from typing import List

from radio.errors import SpecError

OUTPUT_CRITERIA = {"pred_logits": ("KL",), "pred_boxes": ("L1", "GIOU")}
FEATURE_CRITERIA = ("L1", "L2", "IOU")
# The logits-KD term (radio/detection/losses.logits_kd_losses) each output binding reads.
OUTPUT_TERMS = {("pred_logits", "KL"): "class", ("pred_boxes", "L1"): "box_l1", ("pred_boxes", "GIOU"): "box_giou"}
RTDETR_FAMILIES = ("rtdetr", "rtdetr_v2", "d_fine")  # the families with encoder query selection (IOU)


@dataclass(frozen=True)
class Binding:
    index: int  # position in distill.bindings
    teacher: str  # the teacher's feature or output name
    student: str
    criterion: str
    weight: float

    @property
    def is_output(self) -> bool:
        return self.teacher in OUTPUT_CRITERIA

    @property
    def tag(self) -> str:
        """The binding's metrics key: ``kd/<feature>_<criterion>`` (``student<-teacher`` when they differ), so the
        end-of-run loss plot draws every binding as a term of ``kd`` (``radio/engine/report.py``)."""
        name = self.teacher if self.student == self.teacher else f"{self.student}<-{self.teacher}"
        return f"kd/{name}_{self.criterion}"


def resolve_bindings(distill, *, student_family: str) -> List[Binding]:
    """The spec's bindings, checked: criteria per kind, output names on both sides alike, no binding twice,
    ``IOU`` only between RT-DETR-family detectors; ``SpecError`` naming ``distill.bindings[i]``."""
    bindings, seen = [], set()
    for index, entry in enumerate(distill.bindings):
        where = f"distill.bindings[{index}]"
        teacher = str(entry.teacher_module_name)
        student = str(entry.student_module_name or teacher)
        criterion = str(entry.criterion).upper()
        if teacher in OUTPUT_CRITERIA or student in OUTPUT_CRITERIA:
            if student != teacher:
                raise SpecError(
                    f"{where}: an output binding compares the same output of both models; teacher_module_name="
                    f"{teacher!r} and student_module_name={student!r} differ (leave student_module_name unset)."
                )
            allowed = OUTPUT_CRITERIA[teacher]
        else:
            allowed = FEATURE_CRITERIA
            _check_feature_name(teacher, distill.teacher.family, f"{where}.teacher_module_name")
            _check_feature_name(student, student_family, f"{where}.student_module_name")
        if criterion not in allowed:
            kinds = "an output" if teacher in OUTPUT_CRITERIA else "a feature"
            hint = " (KL applies to pred_logits)" if criterion == "KL" else ""
            raise SpecError(
                f"{where}.criterion={entry.criterion!r} is not valid for {kinds} binding of {teacher!r}{hint}; "
                f"use one of: {', '.join(allowed)}."
            )
        if criterion == "IOU" and (
            student_family not in RTDETR_FAMILIES or distill.teacher.family not in RTDETR_FAMILIES
        ):
            raise SpecError(
                f"{where}.criterion=IOU needs RT-DETR-family detectors on both sides (it reads the teacher's encoder "
                f"query selection); model.family={student_family!r}, distill.teacher.family="
                f"{distill.teacher.family!r}. Use L1 or L2."
            )
        if entry.weight < 0:
            raise SpecError(f"{where}.weight={entry.weight!r} is not valid; it must be >= 0.")
        key = (teacher, student, criterion)
        if key in seen:
            raise SpecError(f"{where} repeats an earlier binding ({teacher} -> {student}, {criterion}); keep one.")
        seen.add(key)
        bindings.append(Binding(index, teacher, student, criterion, float(entry.weight)))
    return bindings


def _check_feature_name(name: str, family: str, where: str) -> None:
    """A feature name without a dot must be an alias of the family (``features.FEATURE_ALIASES``); a dotted
    module path is checked against the model when it is built."""
    if "." in name:
        return
    from radio.detection.features import FEATURE_ALIASES
    from radio.detection.models import DETECTOR_FAMILIES

    aliases = FEATURE_ALIASES.get(DETECTOR_FAMILIES[family][0].model_type, {})
    if name not in aliases:
        raise SpecError(
            f"{where}={name!r} is not a feature of a {family} detector: use one of {', '.join(aliases)}, a module "
            f"path such as model.encoder (as model.named_modules() lists it), or an output: pred_logits, pred_boxes."
        )
