"""``radio eval --labelled`` / ``--init`` on a tiny classification-KD run: the numbers equal a direct
computation from the checkpoint's (or the initial module's) logits."""

import json
import os
import shutil

import pytest
import torch

from radio.data.views import make_view
from radio.errors import DataError, RadioError
from radio.eval.evaluate import EvalOptions, evaluate_run
from radio.eval.images import iter_image_batches
from radio.export.trained_run import load_initial_run, load_trained_run
from radio.run.build import build_components, build_teachers
from radio.run.layout import load_results_config
from tests.classification_case import (
    FOLDER_CLASSES,
    NUM_CLASSES,
    direct_scores,
    student_logits,
    train_classification_run,
    write_labelled_folder,
    write_labelled_shards,
)
from tests.conftest import radio_cli

pytestmark = pytest.mark.slow  # trains a run


@pytest.fixture(scope="module")
def classification_results(tmp_path_factory):
    return train_classification_run(str(tmp_path_factory.mktemp("classification")))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    return write_labelled_folder(str(root / "folder")), write_labelled_shards(str(root / "shards"))


def teacher_logits(run, path):
    """The logits teacher on every image under ``path``, computed directly at its input size."""
    (t,) = run.teachers
    teacher = build_teachers([t], num_classes=NUM_CLASSES, device=torch.device("cpu"), dtype=torch.float32)[t.name]
    logits, labels = [], []
    for images, batch_labels in iter_image_batches(path, t.input_size, 5):
        logits.append(teacher(make_view(images, t.input_size, t.norm_mean, t.norm_std)).logits)
        labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def assert_scores(scores, logits, labels, confusion=None):
    top1, top5, matrix = direct_scores(logits, labels)
    assert scores["top1"] == pytest.approx(top1) and scores["top5"] == pytest.approx(top5)
    assert scores["images"] == len(labels)
    if confusion is not None:
        assert confusion == matrix


def test_eval_cli_scores_a_labelled_folder_and_the_logits_teacher(classification_results, labelled, tmp_path):
    out = str(tmp_path / "eval")
    proc = radio_cli("eval", "--results", classification_results, "--labelled", labelled[0], "--no-pca", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "eval.json")) as f:
        cls = json.load(f)["classification"]
    run = load_trained_run(classification_results)
    logits, labels = student_logits(run, labelled[0])
    assert labels.tolist() == sorted(labels.tolist()) and set(labels.tolist()) == {0, 1, 2, 3}
    assert_scores(cls["student"], logits, labels, cls["confusion_matrix"])
    assert cls["class_names"] == [*FOLDER_CLASSES, "4", "5", "6", "7", "8", "9"]
    assert os.path.getsize(cls["confusion_png"]) > 1000
    assert cls["teacher"]["name"] == run.teachers[0].name
    assert_scores(cls["teacher"], *teacher_logits(run, labelled[0]))
    assert "top-1" in proc.stdout and "logits teacher" in proc.stdout and "confusion matrix" in proc.stdout


def test_fidelity_says_the_logits_teacher_was_not_measured(classification_results, labelled, tmp_path):
    out = str(tmp_path / "eval")
    proc = radio_cli("eval", "--results", classification_results, "--images", labelled[0], "--no-pca", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "eval.json")) as f:
        result = json.load(f)
    name = load_trained_run(classification_results).teachers[0].name
    assert result["fidelity"] == {}
    assert "logits teacher" in result["fidelity_not_measured"][name]
    assert f"{name}" in proc.stdout and "not measured: logits teacher" in proc.stdout


def test_labelled_shards_match_the_checkpoints_logits(classification_results, labelled, tmp_path):
    opts = EvalOptions(labelled=labelled[1], fidelity=False, pca=False, batch_size=6)
    cls = evaluate_run(classification_results, str(tmp_path / "eval"), opts, torch.device("cpu"))["classification"]
    logits, labels = student_logits(load_trained_run(classification_results), labelled[1])
    assert_scores(cls["student"], logits, labels, cls["confusion_matrix"])
    assert cls["class_names"] == [str(i) for i in range(NUM_CLASSES)]
    assert "teacher" not in cls and "--no-fidelity" in cls["teacher_skipped"]


def test_teacher_without_weights_is_skipped_with_a_note(classification_results, labelled, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(classification_results, copy)
    (t,) = load_results_config(copy)[1]
    config = os.path.join(copy, "config.yaml")
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace(t.checkpoint_path, str(tmp_path / "gone.safetensors")))
    opts = EvalOptions(labelled=labelled[0], pca=False)
    cls = evaluate_run(copy, str(tmp_path / "eval"), opts, torch.device("cpu"))["classification"]
    assert "teacher" not in cls and "weights do not load" in cls["teacher_skipped"] and "gone" in cls["teacher_skipped"]
    assert cls["student"]["images"] == 4 * len(FOLDER_CLASSES)


def test_init_scores_the_student_the_run_started_from(classification_results, labelled, tmp_path):
    cfg, teachers = load_results_config(classification_results)
    torch.manual_seed(123)  # the training construction seeds itself: whatever the global RNG was
    started = build_components(cfg, teachers, device=torch.device("cpu"), rank=0, world_size=1).model
    initial = load_initial_run(classification_results)
    trained = load_trained_run(classification_results)
    assert initial.checkpoint_dir is None
    for key, value in started.state_dict().items():
        assert torch.equal(initial.model.state_dict()[key], value), key
    init_logits, labels = student_logits(initial, labelled[0])
    trained_logits, _ = student_logits(trained, labelled[0])
    assert (init_logits - trained_logits).abs().max() > 1e-3  # --init is not the checkpoint

    opts = EvalOptions(init=True, labelled=labelled[0], fidelity=False, pca=False)
    result = evaluate_run(classification_results, str(tmp_path / "eval"), opts, torch.device("cpu"))
    assert result["init"] is True and "train.seed=42" in result["checkpoint"]
    assert_scores(
        result["classification"]["student"], init_logits, labels, result["classification"]["confusion_matrix"]
    )


def test_bad_classification_requests_say_what_is_wrong(classification_results, trained_results, labelled, tmp_path):
    out = str(tmp_path / "eval")
    with pytest.raises(RadioError, match=r"no classifier \(dataset.num_classes is 0\)"):
        evaluate_run(trained_results, out, EvalOptions(labelled=labelled[0], fidelity=False, pca=False))
    with pytest.raises(RadioError, match="--init .* cannot be combined with --checkpoint"):
        evaluate_run(classification_results, out, EvalOptions(init=True, checkpoint="x", fidelity=False, pca=False))
    extra = tmp_path / "eleven"
    write_labelled_folder(str(extra), per_class=1)
    for i in range(NUM_CLASSES + 1 - len(FOLDER_CLASSES)):
        shutil.copytree(extra / "ant", extra / f"zz{i:02d}")
    with pytest.raises(DataError, match=r"label 10 is outside the run's classes \(dataset.num_classes is 10"):
        evaluate_run(classification_results, out, EvalOptions(labelled=str(extra), fidelity=False, pca=False))
    proc = radio_cli(
        "eval", "--results", trained_results, "--labelled", labelled[0], "--no-fidelity", "--no-pca", "--out", out
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no classifier" in proc.stderr
