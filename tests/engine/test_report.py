"""The end-of-run plots, report.html and what the dashboards are told about a run, from hand-made rows."""

import base64
import json
import os
from datetime import datetime
from types import SimpleNamespace

import pytest
import yaml

from radio.data.mixture import MixtureEmitter
from radio.engine.report import FEW_POINTS, KIND_STYLES, loss_figure, mixture_figure, write_report
from radio.engine.run_description import requested_mixture, run_tags
from radio.report.dashboards import (
    WANDB_TAG_LIMIT,
    eval_scalars,
    publish_eval_results,
    run_summary,
    wandb_identity,
)
from radio.report.page import write_report_html
from tests.test_layering import imported_modules, sources


def lines_by_label(fig) -> dict:
    (ax,) = fig.axes
    return {line.get_label(): line for line in ax.get_lines()}


def test_a_one_point_run_shows_a_dot_for_every_series():
    rows = [{"step": 1, "loss/t": 0.5, "loss/t/summary": 0.2, "loss/total": 0.5, "mixture/a": 1.0}]
    for fig in (loss_figure(rows, ["t"]), mixture_figure(rows)):
        lines = fig.axes[0].get_lines()
        assert lines
        for line in lines:
            assert list(line.get_xdata()) == [1] and line.get_marker() == "o" and line.get_markersize() > 0


def test_terms_share_their_teachers_colour_in_their_own_style():
    rows = [
        {"step": s, "loss/a": 1.0, "loss/a/summary": 0.4, "loss/a/spatial": 0.6, "loss/b": 2.0, "loss/b/logits": 2.0}
        for s in range(1, FEW_POINTS + 2)
    ]
    lines = lines_by_label(loss_figure(rows, ["a", "b"]))
    assert lines["a"].get_linestyle() == "-" and lines["a"].get_marker() == "None"  # many points: no markers
    for name, kind in (("a", "summary"), ("a", "spatial"), ("b", "logits")):
        term = lines[f"{name} {kind}"]
        assert term.get_color() == lines[name].get_color()
        assert term.get_linestyle() == KIND_STYLES[kind]
    assert lines["a"].get_color() != lines["b"].get_color()
    assert list(lines["a summary"].get_ydata()) == [0.4] * (FEW_POINTS + 1)


def test_the_y_axis_is_logarithmic_only_when_losses_span_more_than_a_decade():
    falling = [{"step": s, "loss/t": 10.0 / s} for s in range(1, 101)]
    flat = [{"step": s, "loss/t": 1.0 + 0.01 * s} for s in range(1, 101)]
    assert loss_figure(falling, ["t"]).axes[0].get_yscale() == "log"
    assert loss_figure(flat, ["t"]).axes[0].get_yscale() == "linear"


def test_a_label_only_run_plots_its_label_loss_and_total():
    rows = [{"step": 1, "loss/label_ce": 2.3, "loss/total": 2.3}, {"step": 2, "loss/label_ce": 2.1, "loss/total": 2.1}]
    assert set(lines_by_label(loss_figure(rows, []))) == {"label_ce", "total (weighted sum)"}
    assert loss_figure([{"step": 1, "lr": 0.1}], []) is None


def test_the_requested_share_is_dashed_in_the_realised_lines_colour():
    rows = [
        {
            "step": s,
            "mixture/x": share,
            "mixture/y": 1 - share,
            "mixture_requested/x": 0.75,
            "mixture_requested/y": 0.25,
        }
        for s, share in ((1, 0.5), (2, 1.0))
    ]
    fig = mixture_figure(rows)
    lines = lines_by_label(fig)
    for source, requested in (("x", 0.75), ("y", 0.25)):
        assert lines[f"{source} requested"].get_linestyle() == "--"
        assert lines[f"{source} requested"].get_color() == lines[f"{source} realised"].get_color()
        assert list(lines[f"{source} requested"].get_ydata()) == [requested, requested]
    assert list(lines["x realised"].get_ydata()) == [0.5, 1.0]
    assert fig.axes[0].get_ylim() == (0, 1)


def test_requested_shares_are_the_mixture_emitters():
    weights = [2.0, 0.5, 1.5]
    shares = requested_mixture(["a", "b", "c"], weights)
    emitter = MixtureEmitter(weights)
    drawn = emitter.take(emitter.total * 3)  # whole periods: exactly the requested shares
    assert shares == {name: drawn.count(i) / len(drawn) for i, name in enumerate("abc")}
    assert shares == pytest.approx({"a": 0.5, "b": 0.125, "c": 0.375})


def test_tags_add_student_teachers_precision_and_engine_to_the_specs():
    def cfg(tags):
        return SimpleNamespace(
            model=SimpleNamespace(backbone=SimpleNamespace(type="c_radio_tiny_patch16")),
            train=SimpleNamespace(precision="bf16"),
            logging=SimpleNamespace(wandb=SimpleNamespace(tags=tags)),
        )

    teachers = [SimpleNamespace(name="dino"), SimpleNamespace(name="siglip")]
    assert run_tags(cfg(["ablation", "engine:ddp"]), teachers, "ddp") == [
        "ablation",
        "engine:ddp",
        "student:c_radio_tiny_patch16",
        "teacher:dino",
        "teacher:siglip",
        "precision:bf16",
    ]
    tags = run_tags(cfg(["x" * 100]), [], "single")
    assert "teacher:none" in tags and len(tags[0]) == WANDB_TAG_LIMIT


def test_wandb_name_and_group_come_from_the_results_dir_unless_set():
    unset = SimpleNamespace(name=None, group=None)
    assert wandb_identity("/runs/sweep_lr/lr_1e-3", unset) == ("lr_1e-3", "sweep_lr")
    assert wandb_identity("/runs/sweep_lr/lr_1e-3/", unset) == ("lr_1e-3", "sweep_lr")
    assert wandb_identity("/runs/a/b", SimpleNamespace(name="n", group="g")) == ("n", "g")


def test_the_summary_counts_every_windows_images_and_keeps_the_newest_losses():
    rows = [
        {"step": 10, "images": 40.0, "images_per_s": 100.0, "loss/t": 2.0, "loss/t/spatial": 1.0},
        {"step": 20, "images": 40.0, "images_per_s": 300.0, "loss/t": 1.0, "loss/t/spatial": None},
    ]
    summary = run_summary(rows, "stopped")
    assert summary == {
        "status": "stopped",
        "steps": 20,
        "images_seen": 80,
        "mean_images_per_s": 200.0,
        "final/loss/t": 1.0,
        "final/loss/t/spatial": 1.0,  # the newest logged (finite) value
    }


EVAL = {
    "checkpoint": "/r/checkpoints/step_0000040",
    "knn": {"top1": 0.8125, "k": 20, "temperature": 0.07, "train_images": 24, "val_images": 12},
    "fidelity": {"t1": {"summary": 0.61234, "spatial": 0.45678, "images": 8}, "t2": {"spatial": 0.3, "images": 8}},
}


def test_eval_results_become_named_scalars():
    assert eval_scalars(EVAL) == {
        "eval/knn_top1": 0.8125,
        "eval/fidelity/t1/summary": 0.61234,
        "eval/fidelity/t1/spatial": 0.45678,
        "eval/fidelity/t2/spatial": 0.3,
        "eval/checkpoint_step": 40,
    }


def test_report_html_embeds_the_plots_and_lists_teachers_mixture_and_eval(tmp_path):
    results = str(tmp_path)
    rows = [
        {
            "step": s,
            "images": 8.0,
            "loss/t1": 1.0 / s,
            "loss/total": 1.0 / s,
            "mixture/a": m,
            "mixture_requested/a": 0.5,
        }
        for s, m in ((1, 0.25), (2, 0.75))
    ]
    with open(os.path.join(results, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    teacher = {"name": "t1", "backbone_type": "demo_vit", "mode": "combo", "loss_type": "COSINE", "loss_lambda": 1.0}
    with open(os.path.join(results, "config.yaml"), "w") as f:
        yaml.safe_dump({"results_dir": results, "resolved_teachers": [teacher]}, f)
    with open(os.path.join(results, "teachers.json"), "w") as f:
        json.dump([{"name": "t1", "file": "/w/t1.safetensors", "dtype": "bfloat16", "notes": ["resampled"]}], f)
    paths = write_report(results, ["t1"])
    page = open(os.path.join(results, "report.html")).read()
    assert [os.path.basename(p) for p in paths] == ["loss_per_teacher.png", "data_mixture.png", "report.html"]
    for plot in paths[:2]:
        assert base64.b64encode(open(plot, "rb").read()).decode() in page
    assert "<td>t1</td><td>demo_vit</td><td>combo</td><td>COSINE</td>" in page
    assert "<td>/w/t1.safetensors</td>" in page and "<td>resampled</td>" in page
    assert "<td>a</td><td>0.5</td><td>0.5</td>" in page  # requested, realised over both windows
    assert "<td>finished</td>" in page and "Evaluation" not in page
    os.makedirs(os.path.join(results, "eval"))
    with open(os.path.join(results, "eval", "eval.json"), "w") as f:
        json.dump(EVAL, f)
    page = open(write_report_html(results)).read()  # as after `radio eval`: eval/eval.json is read
    assert "<td>t1</td><td>0.61234</td><td>0.45678</td><td>8</td>" in page
    assert "<td>0.8125</td><td>20</td>" in page and "step_0000040" in page


CLASSIFICATION_EVAL = {
    "checkpoint": "/r/checkpoints/step_0000040",
    "classification": {
        "student": {"top1": 0.75, "top5": 1.0, "top5_k": 3, "images": 12},
        "teacher": {"top1": 0.9167, "top5": 1.0, "top5_k": 3, "images": 12},
    },
}


def test_classification_accuracy_reaches_the_dashboards_and_the_report(tmp_path):
    scalars = eval_scalars(CLASSIFICATION_EVAL)
    assert scalars["eval/student_top1"] == 0.75 and scalars["eval/teacher_top1"] == 0.9167
    assert scalars["eval/student_top5"] == 1.0 and scalars["eval/checkpoint_step"] == 40
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump({"results_dir": str(tmp_path), "resolved_teachers": []}, f)
    page = open(write_report_html(str(tmp_path), CLASSIFICATION_EVAL)).read()
    assert "<td>student</td><td>0.75</td><td>1</td><td>12</td>" in page
    assert "<td>teacher</td><td>0.9167</td>" in page
    assert "<th>top-3</th>" in page  # 3 classes: the "top-5" score is a top-3
    label_only = {**CLASSIFICATION_EVAL, "fidelity": {}, "fidelity_not_measured": {}}
    page = open(write_report_html(str(tmp_path), label_only)).read()
    assert "no teachers in this run" in page and "summary cosine" not in page


def test_the_untrained_reference_stays_out_of_the_runs_report(tmp_path):
    notes = publish_eval_results(str(tmp_path), {**CLASSIFICATION_EVAL, "init": True})
    assert "not added" in notes[0] and not os.path.exists(tmp_path / "report.html")


def test_a_label_only_report_says_there_are_no_teachers(tmp_path):
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump({"results_dir": str(tmp_path), "resolved_teachers": []}, f)
    page = open(write_report_html(str(tmp_path))).read()
    assert "No teachers" in page


@pytest.mark.parametrize("path", sources("report"), ids=os.path.basename)
def test_the_report_package_reads_the_results_folder_only(path):
    # ``radio eval`` publishes through radio/report, and eval may not import the engine (docs/architecture.md).
    assert {m for m in imported_modules(path) if not m.startswith(("radio.report", "radio.run.layout"))} == set()


def test_a_mailed_report_names_the_student_the_run_times_absolute_weights_and_the_knn_folders(tmp_path):
    """Made from a folder as a run launched in ``tmp_path`` with relative paths leaves it, with an older
    teachers.json whose file is relative to that launch folder."""
    results = tmp_path / "out" / "results"
    results.mkdir(parents=True)
    rows = [{"step": s, "images": 100.0, "images_per_s": 10.0, "loss/t1": 1.0} for s in (1, 2, 3)]  # 10 s each
    (results / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = {"name": "t1", "backbone_type": "demo_vit", "mode": "spatial"}
    config = {"results_dir": "out/results", "model": {"backbone": {"type": "c_radio_tiny_patch16"}}}
    (results / "config.yaml").write_text(yaml.safe_dump({**config, "resolved_teachers": [teacher]}))
    (results / "teachers.json").write_text(json.dumps([{"name": "t1", "file": "out/weights/t1.safetensors"}]))
    (results / "run_status.json").write_text(json.dumps({"status": "finished", "step": 3}))
    ended = 1_700_000_000.0
    for file in ("metrics.jsonl", "run_status.json"):
        os.utime(results / file, (ended, ended))
    knn = {"top1": 0.5, "k": 20, "temperature": 0.07, "train_images": 4, "val_images": 2}
    result = {"checkpoint": "c", "knn": knn, "options": {"knn_train": "/d/train", "knn_val": "/d/val"}}
    page = open(write_report_html(str(results), result)).read()
    assert "<td>student</td><td>c_radio_tiny_patch16</td>" in page
    assert f"<td>{tmp_path}/out/weights/t1.safetensors</td>" in page
    started, finished = (
        datetime.fromtimestamp(t).astimezone().isoformat(sep=" ", timespec="seconds") for t in (ended - 30, ended)
    )
    assert f"<td>started</td><td>{started}</td>" in page and f"<td>ended</td><td>{finished}</td>" in page
    assert "<td>training time</td><td>0:00:30 (h:mm:ss)</td>" in page
    assert "<th>train folder</th><th>val folder</th>" in page and "<td>/d/train</td><td>/d/val</td>" in page


def test_teachers_json_holds_absolute_weight_paths(tmp_path, monkeypatch):
    import torch

    from radio.models.checkpoint_io import LoadReport
    from radio.run.teacher_report import teacher_load_records

    monkeypatch.chdir(tmp_path)  # the launch folder the spec's relative path is relative to
    teacher = SimpleNamespace(
        load_report=LoadReport(path="weights/t.safetensors", fmt="timm"),
        backbone_type="demo_vit_tiny_patch16",
        model=torch.nn.Linear(2, 2),
        dtype=torch.bfloat16,
        compiled=False,
        fp8_layers=[],
        load_seconds=0.1,
        adaptor_report=None,
    )
    (record,) = teacher_load_records({"t": teacher})
    assert record["file"] == str(tmp_path / "weights" / "t.safetensors")


def test_eval_results_reach_wandb_without_its_banner_and_say_where_and_how_to_upload(tmp_path, monkeypatch):
    import sys

    from radio.report.dashboards import _publish_to_wandb

    opened, logged = [], []
    folder = tmp_path / "wandb" / "offline-run-20250101_000000-abc123"
    run = SimpleNamespace(id="abc123", dir=str(folder / "files"), summary={}, log=logged.append, finish=lambda: None)
    fake_wandb = SimpleNamespace(
        init=lambda **kwargs: opened.append(kwargs) or run, Settings=lambda **kwargs: kwargs, Image=lambda path: path
    )
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    cfg = SimpleNamespace(project="p", entity=None, name=None, group=None, mode="offline")
    line = _publish_to_wandb(str(tmp_path), cfg, {"eval/knn_top1": 0.5}, {})
    assert opened[0]["settings"] == {"silent": True} and opened[0]["resume"] == "allow"
    assert logged == [{"eval/knn_top1": 0.5}] and run.summary == {"eval/knn_top1": 0.5}
    assert line.startswith(f"eval results added to W&B run abc123 (offline) in {folder}; ")
    assert f"`wandb sync {tmp_path}/wandb`" in line
    cfg.mode = "online"
    assert "wandb sync" not in _publish_to_wandb(str(tmp_path), cfg, {}, {})


def test_teachers_fidelity_did_not_measure_are_listed_with_the_reason(tmp_path):
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump({"results_dir": str(tmp_path), "resolved_teachers": []}, f)
    result = {**EVAL, "fidelity_not_measured": {"cls_teacher": "logits teacher (no features to compare)"}}
    page = open(write_report_html(str(tmp_path), result)).read()
    assert "<td>cls_teacher</td><td>-</td><td>-</td><td>not measured: logits teacher (no features to compare)</td>" in page
