"""The detection objective's wiring: a copy of the teacher costs nothing, the total is composed exactly once,
the teacher never trains, and projections exist only where widths differ."""

import copy

import pytest
import torch

from radio.detection.bindings import Binding, resolve_bindings
from radio.detection.objective import DetectionDistiller, DetectionTeacher
from radio.detection.schema import DetectionDistillConfig
from radio.errors import SpecError
from tests.detection.conftest import detection_labels, tiny_deformable_detr, tiny_rtdetr

PIXELS = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
FEATURES = [Binding(0, "srcs", "srcs", "L2", 1.0), Binding(1, "encoder", "encoder", "L1", 1.0)]
OUTPUTS = [
    Binding(2, "pred_logits", "pred_logits", "KL", 1.0),
    Binding(3, "pred_boxes", "pred_boxes", "L1", 1.0),
    Binding(4, "pred_boxes", "pred_boxes", "GIOU", 1.0),
]


def frozen(model):
    return model.eval().requires_grad_(False)


def other_model(seed: int):
    """A tiny RT-DETR clearly unlike the teacher: at init, tiny models' features are near zero and their boxes
    are the anchors (zero-initialised box heads), so every tensor gets noise."""
    model = tiny_rtdetr(seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def kd_terms(student, teacher_model, bindings, *, matching="hungarian", **kwargs):
    teacher = DetectionTeacher(teacher_model, bindings, dtype=torch.float32, matching=matching)
    distiller = DetectionDistiller(student, bindings, teacher=teacher, matching=matching, **kwargs)
    labels = detection_labels()
    result = distiller(PIXELS, labels, teacher(PIXELS, labels))
    return distiller, result


def test_a_copy_of_the_teacher_has_zero_feature_and_logits_kd_loss():
    teacher = frozen(tiny_rtdetr(seed=0))
    student = copy.deepcopy(teacher).requires_grad_(True)  # eval mode: no denoising, frozen batch norms alike
    _, result = kd_terms(student, teacher, FEATURES + OUTPUTS)
    terms = {k: v.item() for k, v in result.extra.items() if k.startswith("loss/kd/")}
    assert len(terms) == 5
    assert all(abs(v) < 1e-5 for v in terms.values()), terms
    # ... and another model does not
    _, other = kd_terms(other_model(3), teacher, FEATURES + OUTPUTS)
    assert all(v.item() > 1e-3 for k, v in other.extra.items() if k.startswith("loss/kd/"))


def test_a_query_permuted_copy_costs_nothing_under_hungarian_but_does_under_index():
    teacher = frozen(tiny_deformable_detr(seed=0))
    student = copy.deepcopy(teacher).requires_grad_(True)
    order = torch.randperm(teacher.config.num_queries, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a DETR decoder is permutation-equivariant over its query embeddings
        embedding = student.model.query_position_embeddings.weight
        embedding.copy_(embedding[order])
    _, hungarian = kd_terms(student, teacher, OUTPUTS, matching="hungarian")
    _, by_index = kd_terms(student, teacher, OUTPUTS, matching="index")
    assert all(abs(v.item()) < 1e-5 for k, v in hungarian.extra.items() if k.startswith("loss/kd/"))
    assert by_index.extra["loss/kd/pred_boxes_L1"].item() > 1e-3


def test_total_is_detection_plus_coef_times_each_weight_once():
    teacher = frozen(tiny_rtdetr(seed=0))
    bindings = [Binding(0, "srcs", "srcs", "L2", 2.0), Binding(1, "pred_boxes", "pred_boxes", "L1", 3.0)]
    student = tiny_rtdetr(seed=1).eval()
    _, result = kd_terms(student, teacher, bindings, coef=0.5)
    extra = result.extra
    expected = extra["loss/detection"] + 0.5 * (2.0 * extra["loss/kd/srcs_L2"] + 3.0 * extra["loss/kd/pred_boxes_L1"])
    assert torch.allclose(result.loss, expected, rtol=1e-6)
    assert torch.allclose(
        extra["loss/distillation"], 2.0 * extra["loss/kd/srcs_L2"] + 3.0 * extra["loss/kd/pred_boxes_L1"]
    )
    # the detection term is the student's own loss on the same labels
    own = student(pixel_values=PIXELS, labels=detection_labels()).loss
    assert torch.allclose(extra["loss/detection"], own, rtol=1e-6)


def test_without_a_teacher_the_loss_is_the_detection_loss_alone():
    student = tiny_rtdetr(seed=1).eval()
    distiller = DetectionDistiller(student, [])
    result = distiller(PIXELS, detection_labels(), None)
    assert torch.equal(result.loss, student(pixel_values=PIXELS, labels=detection_labels()).loss)
    assert set(result.extra) == {"loss/detection"}


def test_the_teacher_gets_no_gradients_and_its_signals_no_graph():
    teacher_model = frozen(tiny_rtdetr(seed=0))
    student = tiny_rtdetr(seed=1).train()
    distiller, result = kd_terms(student, teacher_model, FEATURES + OUTPUTS)
    result.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    signals = DetectionTeacher(teacher_model, FEATURES, dtype=torch.float32, matching="hungarian")(PIXELS)
    assert not signals.logits.requires_grad and not any(t.requires_grad for t in signals.features["srcs"])


def test_train_mode_strips_the_students_denoising_queries():
    teacher = frozen(tiny_rtdetr(seed=0, num_queries=12))
    student = tiny_rtdetr(seed=1, num_queries=12).train()  # 8 denoising queries in front when given labels
    _, result = kd_terms(student, teacher, OUTPUTS, matching="index")  # index refuses unequal counts
    assert torch.isfinite(result.loss)


def test_projection_only_where_widths_differ_and_it_trains():
    teacher = frozen(tiny_rtdetr(seed=0, hidden=32))
    same, _ = kd_terms(tiny_rtdetr(seed=1, hidden=32).eval(), teacher, FEATURES)
    assert len(same.projections) == 0
    narrow, result = kd_terms(tiny_rtdetr(seed=1, hidden=16).eval(), teacher, FEATURES)
    assert set(narrow.projections) == {"0", "1"}
    result.loss.backward()
    assert all(p.grad is not None for p in narrow.projections.parameters())
    assert not any(k.startswith("projections.") for k in narrow.student.state_dict())  # not in the detector


def test_iou_binding_reads_the_teachers_query_selection():
    teacher = frozen(tiny_rtdetr(seed=0))
    bindings = [Binding(0, "srcs", "srcs", "IOU", 1.0)]
    _, itself = kd_terms(copy.deepcopy(teacher), teacher, bindings)
    _, other = kd_terms(other_model(2), teacher, bindings)
    assert itself.extra["loss/kd/srcs_IOU"].item() < 1e-7 < other.extra["loss/kd/srcs_IOU"].item()


def test_gt_matching_pairs_queries_matched_to_the_same_object():
    teacher = frozen(tiny_rtdetr(seed=0))
    _, itself = kd_terms(copy.deepcopy(teacher), teacher, OUTPUTS, matching="gt")
    assert all(abs(v.item()) < 1e-5 for k, v in itself.extra.items() if k.startswith("loss/kd/"))


def bindings_spec(*entries, teacher_family="rtdetr"):
    from omegaconf import OmegaConf

    spec = {"teacher": {"family": teacher_family}, "bindings": [dict(entry) for entry in entries]}
    return OmegaConf.merge(OmegaConf.structured(DetectionDistillConfig), spec)


@pytest.mark.parametrize(
    "entry, family, words",
    [
        ({"teacher_module_name": "pred_logits", "criterion": "L2"}, "rtdetr", ["bindings[0].criterion", "KL"]),
        ({"teacher_module_name": "srcs", "criterion": "KL"}, "rtdetr", ["KL applies to pred_logits", "L1, L2, IOU"]),
        ({"teacher_module_name": "srcs", "criterion": "IOU"}, "deformable_detr", ["IOU needs RT-DETR", "L1 or L2"]),
        ({"teacher_module_name": "pred_boxes", "student_module_name": "srcs"}, "rtdetr", ["same output"]),
        ({"teacher_module_name": "srcs", "weight": -1.0}, "rtdetr", ["weight=-1.0", ">= 0"]),
        (
            {"teacher_module_name": "dsrcs"},
            "deformable_detr",
            ["student_module_name='dsrcs'", "backbone, srcs, encoder"],
        ),
    ],
)
def test_bad_bindings_are_refused_naming_the_entry(entry, family, words):
    with pytest.raises(SpecError) as caught:
        resolve_bindings(bindings_spec(entry), student_family=family)
    assert "distill.bindings[0]" in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_a_repeated_binding_is_refused():
    entry = {"teacher_module_name": "srcs", "criterion": "l1"}
    with pytest.raises(SpecError, match=r"bindings\[1\] repeats"):
        resolve_bindings(bindings_spec(entry, entry), student_family="rtdetr")


def test_a_micro_batch_without_objects_still_gives_every_parameter_a_gradient():
    """No objects: RT-DETR builds no denoising group, and DDP would wait forever for its embedding's gradient."""
    student = tiny_rtdetr(seed=1).train()
    distiller = DetectionDistiller(student, [])
    empty = [{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)} for _ in range(2)]
    result = distiller(PIXELS, empty, None)
    result.loss.backward()
    unused = [name for name, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_gt_matching_with_a_feature_binding_builds_and_trains():
    teacher = frozen(tiny_rtdetr(seed=0))
    _, result = kd_terms(tiny_rtdetr(seed=1).train(), teacher, FEATURES + OUTPUTS, matching="gt")
    assert torch.isfinite(result.loss)


def test_the_probe_runs_at_the_given_size_so_many_queries_fit():
    """RT-DETR picks num_queries of the encoder's locations: 100 queries need more than a 64 px probe's 84."""
    teacher = frozen(tiny_rtdetr(seed=0, num_queries=100))
    student = tiny_rtdetr(seed=1, num_queries=100, hidden=16).eval()
    signals_teacher = DetectionTeacher(teacher, FEATURES, dtype=torch.float32, matching="hungarian")
    distiller = DetectionDistiller(student, FEATURES, teacher=signals_teacher, probe_size=(96, 96))
    assert set(distiller.projections) == {"0", "1"}


def test_an_enc_output_binding_and_iou_read_the_same_capture():
    teacher = frozen(tiny_rtdetr(seed=0))
    bindings = [Binding(0, "srcs", "srcs", "IOU", 1.0), Binding(1, "enc_output", "enc_output", "L2", 1.0)]
    _, itself = kd_terms(copy.deepcopy(teacher), teacher, bindings)
    assert set(k for k in itself.extra if k.startswith("loss/kd/")) == {"loss/kd/srcs_IOU", "loss/kd/enc_output_L2"}
    assert all(v.item() < 1e-6 for k, v in itself.extra.items() if k.startswith("loss/kd/"))
