"""Metrics reach metrics.jsonl, TensorBoard and W&B (offline, no network) with per-teacher losses; the
dashboards also get the run's identity, resolved config, requested mixture, plots, summary and, from
``radio eval``, its results; ``report.html`` gathers it on one page."""

import base64
import glob
import json
import os

import pytest
import wandb

from radio.cli import main
from radio.engine.loop import run
from radio.run.layout import load_results_config, read_metrics
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides
from tests.engine.wandb_records import read_run

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


WANDB = ("logging.wandb.enable=true", "logging.wandb.mode=offline", "logging.wandb.project=radio-test")


@pytest.fixture(scope="module")
def dashboard_run(demo_assets, tmp_path_factory):
    """A 2-step run with TensorBoard and offline W&B, restarted to 3 steps, then ``radio eval`` on it:
    (results_dir, its config, {"first" | "restart" | "eval": the W&B run file each process wrote})."""
    results = str(tmp_path_factory.mktemp("dashboards") / "run")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_SILENT", "true")
        for steps in (2, 3):
            extra = (f"train.max_steps={steps}", "logging.tensorboard=true", "logging.wandb.tags=[nightly]", *WANDB)
            cfg = load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, *extra))
            run(cfg)
        images = os.path.join(demo_assets, "data", "source_a")
        assert main(["eval", "--results", results, "--images", images, "--max-images", "8", "--batch-size", "4"]) == 0
    # W&B's service process writes the offline files behind finish(); shutting it down flushes every one.
    wandb.teardown()
    files = {}
    for path in glob.glob(os.path.join(results, "wandb", "offline-run-*", "run-*.wandb")):
        summary = read_run(path).summary
        files["eval" if "eval/checkpoint_step" in summary else {2: "first", 3: "restart"}[summary["steps"]]] = path
    assert set(files) == {"first", "restart", "eval"}
    return results, cfg, files


def _requested_shares(cfg) -> dict:
    """The mixture the spec asks for, from its scale factors (the loader's emitter draws these shares)."""
    sources = cfg.dataset.train_dataset.tar_data_sources
    total = sum(s.scale_factor for s in sources)
    return {s.name: s.scale_factor / total for s in sources}


@pytest.mark.slow
def test_metrics_rows_hold_per_teacher_losses_and_both_mixtures(dashboard_run):
    results, cfg, _ = dashboard_run
    rows = read_metrics(results)
    assert [r["step"] for r in rows] == [1, 2, 3]  # the restart's resumed rows, once each
    row = rows[0]
    for key in ("loss/demo_a", "loss/demo_a/summary", "loss/demo_b/spatial", "loss/total", "lr", "grad_norm"):
        assert key in row, key
    assert row["tflops_per_s"] > 0 and "mfu" not in row  # no known peak on a CPU
    requested = _requested_shares(cfg)
    for source, share in requested.items():
        assert all(r[f"mixture_requested/{source}"] == pytest.approx(share) for r in rows)
        # The realised samples stay within 2 of the requested share (radio/data/mixture.py's bound).
        drawn = sum(r[f"mixture/{source}"] * r["images"] for r in rows)
        assert abs(drawn - share * sum(r["images"] for r in rows)) <= 2


@pytest.mark.slow
def test_wandb_run_has_identity_resolved_config_curves_plots_and_summary(dashboard_run):
    results, cfg, files = dashboard_run
    first = read_run(files["first"])
    assert (first.name, first.group) == ("run", os.path.basename(os.path.dirname(results)))
    assert first.tags[0] == "nightly"  # the spec's tags, then the automatic ones
    expected_tags = {"student:c_radio_tiny_patch16", "teacher:demo_a", "teacher:demo_b", "precision:fp32"}
    assert expected_tags | {"engine:single"} <= set(first.tags)
    _, teachers = load_results_config(results)
    logged = first.config["resolved_teachers"]
    assert [(t["name"], t["mode"], t["input_size"]) for t in logged] == [
        (t.name, t.mode, t.input_size) for t in teachers
    ]
    assert first.config["mixture_requested"] == pytest.approx(_requested_shares(cfg))  # and as curves:
    assert first.config["train"]["max_steps"] == 2
    curves = [h for h in first.history if "loss/demo_a" in h]
    assert [h["_step"] for h in curves] == [1, 2]
    for key in ("loss/demo_a/summary", "loss/demo_a/spatial", "loss/demo_b/spatial", "mixture/source_a"):
        assert all(key in h for h in curves), key
    shares = _requested_shares(cfg)
    assert [h["mixture_requested/source_b"] for h in curves] == pytest.approx([shares["source_b"]] * 2)
    pictures = [h for h in first.history if "report/loss_per_teacher/_type" in h]
    assert len(pictures) == 1 and pictures[0]["report/data_mixture/_type"] == "image-file"
    (png,) = [f for f in first.files if f.startswith("media/images/report/loss_per_teacher")]
    assert os.path.getsize(os.path.join(os.path.dirname(files["first"]), "files", png)) > 1000
    summary = first.summary
    assert (summary["status"], summary["steps"], summary["images_seen"]) == ("finished", 2, 2 * 4)
    assert summary["final/loss/demo_a"] == curves[-1]["loss/demo_a"]
    assert summary["final/loss/demo_a/summary"] == curves[-1]["loss/demo_a/summary"]
    assert summary["mean_images_per_s"] > 0 and first.exit_code == 0


@pytest.mark.slow
def test_a_restart_and_radio_eval_continue_the_same_wandb_run(dashboard_run):
    results, _, files = dashboard_run
    runs = {name: read_run(path) for name, path in files.items()}
    assert {r.run_id for r in runs.values()} == {read_text(os.path.join(results, "wandb_run_id.txt"))}
    restart = runs["restart"]
    assert (restart.summary["steps"], restart.summary["images_seen"]) == (3, 3 * 4)  # counts the first process's
    assert [h["_step"] for h in restart.history if "loss/demo_a" in h] == [3]
    with open(os.path.join(results, "eval", "eval.json")) as f:
        result = json.load(f)
    published = runs["eval"].summary
    assert published["eval/fidelity/demo_a/summary"] == result["fidelity"]["demo_a"]["summary"]
    assert published["eval/fidelity/demo_b/spatial"] == result["fidelity"]["demo_b"]["spatial"]
    assert published["eval/checkpoint_step"] == 3
    assert any(f.startswith("media/images/eval/pca") for f in runs["eval"].files)


@pytest.mark.slow
def test_tensorboard_holds_config_text_plots_summary_and_eval(dashboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results, _, _ = dashboard_run
    acc = EventAccumulator(os.path.join(results, "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for key in ("loss/demo_a", "loss/demo_a/summary", "mixture/source_a", "mixture_requested/source_a"):
        assert key in tags["scalars"], key
    assert {"report/loss_per_teacher", "report/data_mixture", "eval/pca"} <= set(tags["images"])
    assert acc.Images("report/loss_per_teacher")[-1].width > 100

    def text(tag: str) -> str:
        return acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    config = text("run/config")
    assert "resolved_teachers" in config and "name: demo_b" in config and "mixture_requested" in config
    assert "| status | finished |" in text("run/summary") and "| steps | 3 |" in text("run/summary")
    assert "teacher:demo_a" in text("run/identity")
    assert "eval/fidelity/demo_a/spatial" in text("eval/results")
    assert [e.step for e in acc.Scalars("eval/fidelity/demo_a/spatial")] == [3]


@pytest.mark.slow
def test_report_html_holds_both_plots_the_teachers_and_the_eval_numbers(dashboard_run):
    results, _, _ = dashboard_run
    page = read_text(os.path.join(results, "report.html"))
    for plot in ("loss_per_teacher.png", "data_mixture.png"):
        with open(os.path.join(results, plot), "rb") as f:
            assert base64.b64encode(f.read()).decode() in page, plot  # the plot itself, embedded
    assert "<td>demo_a</td><td>demo_vit_tiny_patch16</td><td>combo</td>" in page
    assert "<td>demo_b</td><td>demo_vit_tiny_patch14</td><td>spatial</td>" in page
    with open(os.path.join(results, "eval", "eval.json")) as f:
        fidelity = json.load(f)["fidelity"]
    assert f"<td>demo_a</td><td>{fidelity['demo_a']['summary']:.5g}</td>" in page
    assert "<td>finished</td>" in page


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.mark.slow
def test_the_console_and_teachers_json_say_how_each_teacher_loaded(demo_assets, tmp_path, capsys):
    results = str(tmp_path / "run")
    run(load_run_config(QUICKSTART_SPEC, tiny_run_overrides(demo_assets, results, "train.max_steps=1")))
    console = capsys.readouterr().out.splitlines()
    with open(os.path.join(results, "teachers.json")) as f:
        records = {r["name"]: r for r in json.load(f)}
    assert set(records) == {"demo_a", "demo_b"}
    for name, weights in (("demo_a", "demo_vit_tiny_patch16"), ("demo_b", "demo_vit_tiny_patch14")):
        record = records[name]
        assert record["file"].endswith(f"{weights}.DEMO_RANDOM_INIT.safetensors") and record["layout"] == "timm"
        # float32: distill.teacher_precision is unset, and on CPU teachers follow train.precision (fp32 here).
        assert (
            record["tensors"] > 0 and record["missing"] == record["unexpected"] == [] and record["dtype"] == "float32"
        )
        (line,) = [x for x in console if x.startswith(f"teacher {name} ")]
        assert f"{record['tensors']} tensors from {record['file']}" in line
    # demo_b's 14-px patches at the run's 112 px: its position grid is resampled, and both outputs say so.
    assert any("resampled" in n for n in records["demo_b"]["notes"]) and "resampled" in line
