"""The detection KD benchmark runs end to end on its tiny preset and records every field of its three student
runs; a rerun continues instead of retraining. No KD gain is asserted: measuring it is the benchmark's job."""

import importlib.util
import json
import math
import os

import pytest
import torch

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "tools", "bench", "detection_kd_effect.py")
RUNS = ("no_kd", "feature_kd", "feature_logits_kd")
MISMATCH = "loss/kd/srcs_IOU"
LOGITS_TERMS = {"loss/kd/pred_logits_KL", "loss/kd/pred_boxes_L1", "loss/kd/pred_boxes_GIOU"}


def bench_main():
    """The script's ``main``, in this process (one import of radio and transformers for its three calls)."""
    spec = importlib.util.spec_from_file_location("detection_kd_effect", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def assert_metrics(metrics: dict) -> None:
    for key in ("mAP", "mAP50"):
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, metrics


def expected_ratio(value: float, reference: float):
    return None if reference == 0 else pytest.approx(value / reference)


@pytest.mark.slow
def test_the_tiny_preset_records_three_student_runs_and_a_rerun_continues(tmp_path, capsys):
    torch.set_num_threads(1)
    main, out = bench_main(), str(tmp_path / "kd")
    args = ["--preset", "tiny", "--out", out, "--steps-scale", "0.25"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "step 1/" in printed  # the runs' progress lines, which a continued rerun must not print
    with open(os.path.join(out, "detection_kd_effect.json")) as f:
        result = json.load(f)
    assert json.loads(printed.strip().splitlines()[-1]) == result
    assert result["device"] == "cpu" and result["settings"]["steps_scale"] == 0.25
    phases, settings = result["phases"], result["settings"]
    assert phases["data"]["seconds"] > 0 and phases["teacher"]["train_s"] > 0
    assert phases["teacher"]["steps"] == settings["teacher_steps"]
    assert_metrics(result["teacher"])

    for name in RUNS:
        entry = phases[name]
        assert entry["steps"] == settings["student_steps"], name  # same steps for all three
        assert entry["train_s"] > 0 and entry["eval_s"] > 0
        assert_metrics(entry["student"])
        assert entry["teacher"] == result["teacher"]  # the one trained teacher, scored alike in every run
        held_out = entry["held_out"]
        assert (
            math.isfinite(held_out["loss/detection"]) and math.isfinite(held_out[MISMATCH]) and held_out[MISMATCH] >= 0
        )
    assert (
        phases["no_kd"]["coef"] == 0.0 and phases["feature_kd"]["coef"] > 0 and phases["feature_logits_kd"]["coef"] > 0
    )
    # no_kd measures every KD term of the full run without training on them; feature_kd has the feature term only.
    assert LOGITS_TERMS <= set(phases["no_kd"]["held_out"]) and LOGITS_TERMS <= set(
        phases["feature_logits_kd"]["held_out"]
    )
    assert not LOGITS_TERMS & set(phases["feature_kd"]["held_out"])

    reference = phases["no_kd"]
    for name in ("feature_kd", "feature_logits_kd"):
        ratios = result["ratios_vs_no_kd"][name]
        assert ratios["mAP"] == expected_ratio(phases[name]["student"]["mAP"], reference["student"]["mAP"])
        assert ratios[MISMATCH] == expected_ratio(phases[name]["held_out"][MISMATCH], reference["held_out"][MISMATCH])
    for row in ("teacher", *RUNS):
        assert any(line.startswith(row) for line in printed.splitlines()), row  # the printed table

    assert main(args) == 0
    again = capsys.readouterr().out
    assert "step 1/" not in again  # every phase was kept, nothing retrained
    assert json.loads(again.strip().splitlines()[-1])["phases"] == phases

    assert main([*args[:-1], "0.5"]) == 2
    refused = capsys.readouterr().err
    assert "other settings" in refused and "detection_kd_effect.json" in refused
