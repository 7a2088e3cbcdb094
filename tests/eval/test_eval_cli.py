"""``radio eval`` end to end on a tiny trained run (subprocess), and user errors without tracebacks."""

import argparse
import json
import os

import pytest

from radio.data.synthetic import write_synthetic_shards
from radio.eval.commands import add_commands
from tests.conftest import REPO, tiny_run_overrides
from tests.conftest import radio_cli

pytestmark = pytest.mark.slow  # every test here trains or spawns processes


@pytest.fixture(scope="module")
def knn_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("knn")
    write_synthetic_shards(str(root / "train"), 24, 12, seed=1, with_cls=True, num_classes=3)
    write_synthetic_shards(str(root / "val"), 12, 12, seed=2, with_cls=True, num_classes=3)
    return str(root / "train"), str(root / "val")


def test_eval_cli_writes_knn_fidelity_and_pca(trained_results, knn_data, tmp_path):
    out = str(tmp_path / "eval")
    proc = radio_cli(
        "eval",
        "--results",
        trained_results,
        "--knn-train",
        knn_data[0],
        "--knn-val",
        knn_data[1],
        "--out",
        out,
        "--batch-size",
        "8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "eval.json")) as f:
        result = json.load(f)
    knn = result["knn"]
    assert (knn["k"], knn["temperature"]) == (20, 0.07)  # evaluate.knn_k / knn_temperature defaults
    assert (knn["train_images"], knn["val_images"]) == (24, 12) and 0.0 <= knn["top1"] <= 1.0
    fidelity = result["fidelity"]
    assert set(fidelity["demo_a"]) == {"summary", "spatial", "images"}  # combo teacher
    assert set(fidelity["demo_b"]) == {"spatial", "images"}  # spatial-only teacher
    assert all(-1.0 <= v <= 1.0 for s in fidelity.values() for k, v in s.items() if k != "images")
    assert os.path.getsize(os.path.join(out, "pca.png")) > 1000
    assert "kNN top-1" in proc.stdout and "demo_b" in proc.stdout
    assert result["checkpoint"].endswith("step_0000004")


def test_eval_from_spec_uses_its_evaluate_section(trained_results, demo_assets, knn_data, tmp_path):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = str(tmp_path / "eval")
    args = parser.parse_args(
        [
            "eval",
            "-e",
            os.path.join(REPO, "specs", "quickstart.yaml"),
            "--knn-train",
            knn_data[0],
            "--knn-val",
            knn_data[1],
            "--out",
            out,
            "--no-fidelity",
            "--no-pca",
            *tiny_run_overrides(demo_assets, trained_results),
            "evaluate.knn_k=3",
            "evaluate.knn_temperature=0.5",
        ]
    )
    assert args.func(args) == 0
    with open(os.path.join(out, "eval.json")) as f:
        result = json.load(f)
    assert (result["knn"]["k"], result["knn"]["temperature"]) == (3, 0.5)
    assert "fidelity" not in result and "pca_png" not in result


def test_eval_user_errors_exit_2_without_traceback(trained_results, knn_data, tmp_path, demo_assets):
    missing = radio_cli("eval", "--results", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "absent" in missing.stderr

    half = radio_cli(
        "eval",
        "--results",
        trained_results,
        "--knn-train",
        knn_data[0],
        "--no-fidelity",
        "--no-pca",
        "--out",
        str(tmp_path / "o"),
    )
    assert half.returncode == 2 and "Traceback" not in half.stderr and "--knn-val" in half.stderr

    # Shards without .cls labels cannot be a kNN bank.
    unlabeled = f"{demo_assets}/data/source_b"
    nolabel = radio_cli(
        "eval",
        "--results",
        trained_results,
        "--knn-train",
        unlabeled,
        "--knn-val",
        unlabeled,
        "--no-fidelity",
        "--no-pca",
        "--out",
        str(tmp_path / "o"),
    )
    assert nolabel.returncode == 2 and "Traceback" not in nolabel.stderr and "no label" in nolabel.stderr
