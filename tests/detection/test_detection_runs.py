"""``task: detection`` end to end on CPU: exact resume after kill -9, feature KD that works on held-out images,
``radio eval`` / ``radio export`` of a finished run, bad specs refused in one message, and
``model.load_teacher_enc_dec``. Tiny runs (``tests/detection/runs.py``): a few seconds of training each."""

import json
import os
import signal

import pytest
import torch

from radio.engine.loop import run
from radio.run.spec import load_run_config
from tests.detection.runs import (
    HOLD_ENV,
    NUM_CLASSES,
    SIZE,
    checkpoint_dir,
    checkpoint_tensors,
    detection_spec,
    hold_command,
    metrics_rows,
    radio,
    start,
    student_state,
    tiny_detector,
    wait_for,
    write_coco,
    write_spec,
    write_teacher,
)

ALL_BINDINGS = [  # the whole objective: a feature term and both output terms
    {"teacher_module_name": "srcs", "criterion": "L2"},
    {"teacher_module_name": "pred_logits", "criterion": "KL"},
    {"teacher_module_name": "pred_boxes", "criterion": "L1"},
]
STEPS = 8  # 8 train images in batches of 2: two epochs
RESUME_TRAIN = {
    "max_steps": STEPS,
    "checkpoint_interval_steps": 2,
    "keep_checkpoints": 10,
    "validation_interval_steps": 3,  # at steps 3 and 6 (between checkpoints) and at the last step
}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection_runs")
    return {"coco": write_coco(str(root / "coco")), "teacher": write_teacher(str(root / "teacher"), perturb=0.05)}


@pytest.fixture(scope="module")
def finished(assets, tmp_path_factory):
    """An 8-step run with a teacher and every kind of binding, multi-scale training and validation, run in
    this process: the reference of the resume test and the run ``radio eval`` / ``export`` read."""
    root = tmp_path_factory.mktemp("finished")
    spec = detection_spec(
        str(root / "results"), assets["coco"], assets["teacher"], distill={"bindings": ALL_BINDINGS}, train=RESUME_TRAIN
    )
    spec["dataset"]["augmentation"]["multi_scales"] = [32, SIZE, 96]
    path = write_spec(str(root / "spec.yaml"), spec)
    torch.set_num_threads(1)
    result = run(load_run_config(path, []))
    assert result.steps == STEPS and not result.stopped_early
    return {"spec": path, "results": spec["results_dir"]}


def without_timing(rows):
    return [{k: v for k, v in row.items() if not k.endswith("_per_s")} for row in rows]


@pytest.mark.slow
def test_a_detection_run_killed_mid_run_resumes_bit_identically(finished, tmp_path):
    results, log = str(tmp_path / "results"), str(tmp_path / "log")
    command = ("distill", "-e", finished["spec"], f"results_dir={results}")
    proc = start(hold_command(*command), log, **{HOLD_ENV: "6"})  # blocks after step 5: checkpoint 4 is the newest

    def step_5_logged():
        path = os.path.join(results, "metrics.jsonl")
        return os.path.exists(path) and any(row.get("step") == 5 for row in metrics_rows(results))

    wait_for(step_5_logged, proc, log)
    assert os.path.isfile(os.path.join(checkpoint_dir(results, 4), "trainer_state.json"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not os.path.exists(checkpoint_dir(results, 6))

    again = radio(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {checkpoint_dir(results, 4)} at step 4" in again.stdout

    reference, resumed = metrics_rows(finished["results"]), metrics_rows(results)
    assert [r["step"] for r in resumed] == [1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 8]  # loss rows, val rows at 3, 6 and the end
    assert [r for r in resumed if "val_mAP" in r] and all("loss/kd/srcs_L2" in r for r in resumed if "lr" in r)
    assert without_timing(resumed) == without_timing(reference)
    a, b = checkpoint_tensors(finished["results"], STEPS), checkpoint_tensors(results, STEPS)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_feature_kd_brings_the_students_held_out_features_to_the_teachers(assets, tmp_path):
    """The same run with ``distillation_loss_coef`` 1 and 0 (the term logged, not trained), scored by
    ``radio eval``'s held-out losses: only the distilled student comes close to its teacher's ``srcs``."""
    from radio.detection.run_files import evaluate_detection_run

    held_out = {}
    for coef in (1.0, 0.0):
        results = str(tmp_path / f"coef_{coef}")
        spec = detection_spec(
            results,
            assets["coco"],
            assets["teacher"],
            model=tiny_detector(distillation_loss_coef=coef),
            distill={"bindings": [{"teacher_module_name": "srcs", "criterion": "L2", "weight": 1000.0}]},
            train={"max_steps": STEPS, "optim": {"lr": 0.01, "warmup_steps": 0}},
        )
        run(load_run_config(write_spec(str(tmp_path / f"spec_{coef}.yaml"), spec), []))
        (scores,) = evaluate_detection_run(results, str(tmp_path / f"eval_{coef}"))["held_out"].values()
        held_out[coef] = scores["loss/kd/srcs_L2"]
    assert held_out[1.0] < 0.8 * held_out[0.0], held_out
    # Matched, not merely shrunk towards zero (an unperturbed random teacher's srcs are almost zero).
    assert held_out[1.0] < 0.5 * zero_student_srcs_l2(results), held_out


def zero_student_srcs_l2(results_dir: str) -> float:
    """The held-out ``srcs`` L2 of a student whose ``srcs`` are all zero: the teacher's mean squared feature,
    weighted per image as ``radio/detection/run_files.held_out_losses`` weighs its losses."""
    from radio.detection.data import CocoDetectionSource, detection_eval_batches
    from radio.detection.run_files import load_detection_distiller
    from radio.run.layout import load_results_config

    cfg, _ = load_results_config(results_dir)
    _, teacher, _ = load_detection_distiller(cfg, results_dir, None, init=True, device=torch.device("cpu"))
    val, aug = cfg.dataset.val_data_sources[0], cfg.dataset.augmentation
    source = CocoDetectionSource(val.image_dir, val.json_file, num_classes=NUM_CLASSES, where="val")
    batches = detection_eval_batches(
        source,
        batch_size=cfg.dataset.batch_size,
        workers=0,
        spatial_size=tuple(aug.eval_spatial_size),
        norm_mean=list(aug.norm_mean),
        norm_std=list(aug.norm_std),
    )
    total = 0.0
    for batch in batches:
        levels = teacher(batch.pixel_values).features["srcs"]
        total += sum(float(level.pow(2).mean()) for level in levels) * len(batch.labels)
    return total / source.num_images


@pytest.mark.slow
def test_radio_eval_and_export_of_a_finished_detection_run(finished, tmp_path):
    from transformers import AutoModelForObjectDetection

    from radio.detection.run_files import load_detection_distiller
    from radio.run.layout import load_results_config

    results = finished["results"]
    evaluated = radio("eval", "--results", results)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(os.path.join(results, "eval", "eval.json")) as f:
        scores = json.load(f)
    ((name, detection),) = scores["detection"].items()
    for who in ("student", "teacher"):
        assert 0.0 <= detection[who]["mAP"] <= 1.0, detection
    assert {"loss/detection", "loss/kd/srcs_L2", "loss/kd/pred_logits_KL", "loss/kd/pred_boxes_L1"} <= set(
        scores["held_out"][name]
    )
    with open(os.path.join(results, "report.html")) as f:
        assert "mAP" in f.read()

    out = str(tmp_path / "export")
    exported = radio("export", "--results", results, "--out", out)
    assert exported.returncode == 0, exported.stderr[-3000:]
    cfg, _ = load_results_config(results)
    distiller, _, folder = load_detection_distiller(cfg, results, None, init=False, device=torch.device("cpu"))
    assert folder == checkpoint_dir(results, STEPS)
    pixels = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = distiller.student(pixel_values=pixels)
        for saved in (out, os.path.join(results, "detector_final")):
            model = AutoModelForObjectDetection.from_pretrained(saved).eval()
            got = model(pixel_values=pixels)
            assert torch.equal(got.logits, expected.logits) and torch.equal(got.pred_boxes, expected.pred_boxes)
    final = AutoModelForObjectDetection.from_pretrained(os.path.join(results, "detector_final")).state_dict()
    trained = student_state(results, STEPS)
    assert final.keys() == trained.keys()
    assert [k for k in final if not torch.equal(final[k], trained[k])] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, message",
    [
        ({"dataset": {"num_classes": 5}}, "dataset.num_classes=5, but "),
        (
            {"distill": {"bindings": [{"teacher_module_name": "srcs", "criterion": "L3"}]}},
            "distill.bindings[0].criterion='L3' is not valid",
        ),
        (
            {"distill": {"bindings": [{"teacher_module_name": "srcz", "criterion": "L2"}]}},
            "distill.bindings[0].teacher_module_name='srcz' is not a feature of a rtdetr detector",
        ),
    ],
    ids=["num_classes", "criterion", "feature_name"],
)
def test_a_bad_detection_spec_exits_2_with_one_message(assets, tmp_path, change, message):
    teacher = assets["teacher"] if "distill" in change else None  # a teacher would refuse 5 classes first
    spec = detection_spec(str(tmp_path / "results"), assets["coco"], teacher, **change)
    proc = radio("distill", "-e", write_spec(str(tmp_path / "spec.yaml"), spec))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("radio: error:") == 1 and message in proc.stderr, proc.stderr


def enc_dec_run(assets, tmp_path, **distill):
    """The config of a 1-step run that starts its student from its teacher, and the teacher's own tensors."""
    from radio.detection.models import load_detector
    from radio.detection.schema import DetectorConfig

    spec = detection_spec(
        str(tmp_path / "results"),
        assets["coco"],
        assets["teacher"],
        model=tiny_detector(load_teacher_enc_dec=True),
        distill=distill,
        train={"max_steps": 1},
    )
    cfg = load_run_config(write_spec(str(tmp_path / "spec.yaml"), spec), [])
    teacher = load_detector(DetectorConfig(**tiny_detector()), NUM_CLASSES, assets["teacher"], where="distill.teacher")
    return cfg, teacher.state_dict()


def step_zero_student(cfg):
    """The student as the run builds it, before its first step, and how many tensors it took from its teacher."""
    from radio.detection.task import DetectionTask
    from radio.engine.accel import build_accelerator

    trainer = DetectionTask(cfg).build(build_accelerator(cfg.train, cfg.dataset.batch_size), None, None)
    return trainer.trainable.student.state_dict(), trainer.copied_tensors


def outside_backbone(state):
    from radio.detection.models import BACKBONE_PREFIX

    return [k for k in state if not k.startswith(BACKBONE_PREFIX)]


@pytest.mark.slow
def test_load_teacher_enc_dec_starts_the_student_from_its_teacher(assets, tmp_path, capsys):
    cfg, teacher = enc_dec_run(assets, tmp_path)
    shared = outside_backbone(teacher)
    student, copied = step_zero_student(cfg)
    assert copied == len(shared)  # same widths, levels and classes: all of them
    assert [k for k in shared if not torch.equal(student[k], teacher[k])] == []
    stem = "model.backbone.model._backbone.stem_0.weight"
    assert not torch.equal(student[stem], teacher[stem])  # the backbone keeps its own initialisation

    capsys.readouterr()
    run(cfg)
    assert (
        f"model.load_teacher_enc_dec: copied {len(shared)} of {len(shared)} teacher tensors" in capsys.readouterr().out
    )
    with open(os.path.join(cfg.results_dir, "teachers.json")) as f:
        (record,) = json.load(f)
    assert record["copied_into_student"] == len(shared)


@pytest.mark.slow
def test_load_teacher_enc_dec_copies_the_teachers_own_tensors_under_a_bf16_teacher(assets, tmp_path):
    cfg, teacher = enc_dec_run(assets, tmp_path, teacher_precision="bf16")
    student, _ = step_zero_student(cfg)
    assert [k for k in outside_backbone(teacher) if not torch.equal(student[k], teacher[k])] == []


@pytest.mark.slow
def test_eval_init_scores_the_student_the_run_started_from(assets, tmp_path):
    from radio.detection.run_files import load_detection_distiller

    cfg, _ = enc_dec_run(assets, tmp_path)
    student, _ = step_zero_student(cfg)
    distiller, _, _ = load_detection_distiller(cfg, cfg.results_dir, None, init=True, device=torch.device("cpu"))
    initial = distiller.student.state_dict()
    assert initial.keys() == student.keys()
    assert [k for k in student if not torch.equal(initial[k], student[k])] == []
