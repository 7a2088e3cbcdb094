"""Label-only training: ``distill.teacher: []`` with ``dataset.num_classes > 0`` trains the student's classifier
on the labels alone (cross-entropy), builds no teacher, checkpoints and resumes."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from radio.cli import main as radio_main
from radio.engine.loop import run
from radio.errors import SpecError
from radio.export.trained_run import load_trained_run
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

SPEC = """
results_dir: {results}
model: {{backbone: {{type: c_radio_tiny_patch16}}}}
dataset:
  num_classes: 2
  img_size: 64
  batch_size: 8
  workers: 0
  train_dataset: {{images_dir: {images}}}
train:
  num_epochs: 10
  max_steps: 6
  precision: fp32
  log_every_n_steps: 1
  checkpoint_interval: null
  optim: {{lr: 0.003, policy: constant, warmup_steps: 0}}
distill:
  teacher: []
logging: {{progress_bar: false}}
"""


def write_spec(tmp_path, images="/nowhere") -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(results=tmp_path / "out", images=images))
    return str(spec)


def write_two_colour_classes(root, per_class: int = 16) -> str:
    """Class folders ``0_red`` / ``1_blue`` of noisy 64x64 images whose colour gives the class: learnable in a
    few steps whatever the crop or flip."""
    rng = np.random.default_rng(0)
    for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        folder = os.path.join(root, f"{label}_{'red' if label == 0 else 'blue'}")
        os.makedirs(folder)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.png"))
    return str(root)


def test_no_teachers_and_no_classes_is_refused_naming_both_ways_out(tmp_path):
    with pytest.raises(SpecError) as info:
        load_run_config(write_spec(tmp_path), ["dataset.num_classes=0"])
    message = str(info.value)
    assert "distill.teacher is empty" in message and "list at least one teacher" in message
    assert "dataset.num_classes" in message and "label-only" in message


def test_no_teachers_with_classes_resolves_to_no_teacher(tmp_path, capsys):
    cfg = load_run_config(write_spec(tmp_path), [])
    assert resolve_teachers(cfg) == []
    assert radio_main(["distill", "-e", write_spec(tmp_path), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "resolved_teachers: []" in out and "label-only training" in out


@pytest.mark.slow
def test_label_only_run_trains_resumes_and_builds_no_teacher(tmp_path, monkeypatch):
    import radio.run.build

    def no_teacher(*args, **kwargs):
        raise AssertionError("a label-only run built a teacher")

    monkeypatch.setattr(radio.run.build, "FrozenTeacher", no_teacher)
    spec = write_spec(tmp_path, write_two_colour_classes(tmp_path / "images"))
    results = tmp_path / "out"

    first = run(load_run_config(spec, []))
    assert first.steps == 6 and first.teacher_names == []
    resumed = run(load_run_config(spec, ["train.max_steps=12"]))
    assert resumed.resumed_from.endswith("step_0000006") and resumed.steps == 12

    with open(results / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for row in rows:  # with no teacher the total is the label CE, and no per-teacher loss is logged
        assert row["loss/total"] == pytest.approx(row["loss/label_ce"], rel=1e-6)
        assert {k for k in row if k.startswith("loss/")} == {"loss/total", "loss/label_ce"}
        assert row["loss_terms_skipped"] == 0
    first_two, last_two = [r["loss/label_ce"] for r in rows[:2]], [r["loss/label_ce"] for r in rows[-2:]]
    assert max(last_two) < 0.5 * min(first_two), [r["loss/label_ce"] for r in rows]

    with open(results / "teachers.json") as f:
        assert json.load(f) == []
    with open(results / "student_final.json") as f:
        meta = json.load(f)
    assert meta["teachers"] == [] and meta["num_classes"] == 2
    assert (results / "student_final.safetensors").stat().st_size > 0
    # radio eval / radio export rebuild it from the checkpoint, with no normaliser to read.
    trained = load_trained_run(str(results))
    assert trained.teachers == [] and trained.normalizers == {} and trained.model.classifier.out_features == 2
