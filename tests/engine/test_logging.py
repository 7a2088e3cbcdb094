"""Metrics reach metrics.jsonl, TensorBoard and W&B (offline, no network) with per-teacher losses."""

import glob
import json
import os

import pytest

from radio.engine.loop import run
from radio.run.spec import load_run_config
from tests.conftest import REPO, tiny_run_overrides

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


@pytest.mark.slow
def test_tensorboard_and_offline_wandb_receive_per_teacher_losses(demo_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    results = str(tmp_path / "run")
    cfg = load_run_config(
        QUICKSTART_SPEC,
        tiny_run_overrides(
            demo_assets,
            results,
            "train.max_steps=2",
            "logging.tensorboard=true",
            "logging.wandb.enable=true",
            "logging.wandb.mode=offline",
            "logging.wandb.project=radio-test",
        ),
    )
    run(cfg)
    with open(os.path.join(results, "metrics.jsonl")) as f:
        row = json.loads(f.readline())
    for key in (
        "loss/demo_a",
        "loss/demo_b",
        "loss/total",
        "lr",
        "grad_norm",
        "images_per_s",
        "mixture/source_a",
        "mixture/source_b",
    ):
        assert key in row, key
    assert row["tflops_per_s"] > 0 and "mfu" not in row  # no known peak on a CPU
    events = glob.glob(os.path.join(results, "tensorboard", "events.out.tfevents.*"))
    assert events and os.path.getsize(events[0]) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    assert "loss/demo_a" in acc.Tags()["scalars"]
    (first_run,) = glob.glob(os.path.join(results, "wandb", "offline-run-*", "run-*.wandb"))
    # A restart continues the same W&B run id instead of starting a new run.
    run(
        load_run_config(
            QUICKSTART_SPEC,
            tiny_run_overrides(
                demo_assets,
                results,
                "train.max_steps=3",
                "logging.wandb.enable=true",
                "logging.wandb.mode=offline",
                "logging.wandb.project=radio-test",
            ),
        )
    )
    runs = glob.glob(os.path.join(results, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(runs) == 2
    assert {os.path.basename(p).split("-")[-1] for p in runs} == {os.path.basename(first_run).split("-")[-1]}
    assert os.path.exists(os.path.join(results, "loss_per_teacher.png"))
    assert os.path.exists(os.path.join(results, "data_mixture.png"))


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
        assert (
            record["tensors"] > 0 and record["missing"] == record["unexpected"] == [] and record["dtype"] == "bfloat16"
        )
        (line,) = [x for x in console if x.startswith(f"teacher {name} ")]
        assert f"{record['tensors']} tensors from {record['file']}" in line
    # demo_b's 14-px patches at the run's 112 px: its position grid is resampled, and both outputs say so.
    assert any("resampled" in n for n in records["demo_b"]["notes"]) and "resampled" in line
