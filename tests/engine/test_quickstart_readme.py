"""The README's quickstart commands, in its order, from a folder holding ``specs/`` as the repository root does:
quickstart, a re-run that has nothing to do, eval on the labelled demo split, ``radio shards write`` and
``stats``, a distillation weighted by the counts, and ``--fresh``. Training is shrunk by ``TINY``."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = [
    "train.max_steps=2",
    "dataset.batch_size=4",
    "dataset.workers=0",
    "train.log_every_n_steps=1",
    "logging.progress_bar=false",
]
# README.md, "After the quickstart: evaluate it, pack your own shards" (line continuations joined).
QUICKSTART = "radio quickstart"
EVAL = (
    "radio eval --results quickstart_out/results --knn-train quickstart_out/data/labelled/train "
    "--knn-val quickstart_out/data/labelled/val"
)
SHARDS_WRITE = "radio shards write quickstart_out/data/labelled/train quickstart_out/data/labelled_shards --maxcount 20"
SHARDS_STATS = "radio shards stats quickstart_out/data/source_a quickstart_out/data/source_b"
WEIGHTED = (
    "radio distill -e specs/quickstart.yaml dataset.train_dataset.data_weight_mode=inv_frequency "
    "results_dir=quickstart_out/results_inv_frequency"
)


def run_in(folder, command: str, *extra: str):
    """``command`` (README text, starting with ``radio``) with ``extra`` arguments, run in ``folder``."""
    script = os.path.join(os.path.dirname(sys.executable), shlex.split(command)[0])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [script, *shlex.split(command)[1:], *extra], capture_output=True, text=True, timeout=300, cwd=folder, env=env
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_the_readme_quickstart_commands_work(tmp_path):
    os.symlink(os.path.join(REPO, "specs"), tmp_path / "specs")
    out = tmp_path / "quickstart_out"
    first = run_in(tmp_path, QUICKSTART, *TINY)
    assert "step 2/2 (100%)" in first and (out / "results" / "student_final.safetensors").exists()
    data_files = {str(p): p.stat().st_mtime_ns for p in (out / "data").rglob("*") if p.is_file()}

    again = run_in(tmp_path, QUICKSTART, *TINY)
    assert f"the run in {out / 'results'} finished at step 2; nothing to do" in again
    assert "step 1/" not in again  # nothing trained
    assert "demo_a" in again.split("per-teacher distillation loss")[1]  # the finished run's summary

    report = run_in(tmp_path, EVAL)
    with open(out / "results" / "eval" / "eval.json") as f:
        knn = json.load(f)["knn"]
    assert (knn["train_images"], knn["val_images"]) == (60, 30)  # 3 classes x 20 / x 10
    assert knn["top1"] > 0.6, report  # the classes differ in colour and shape: far above chance (1/3)

    assert "wrote 3 shard(s)" in run_in(tmp_path, SHARDS_WRITE)
    assert sorted(os.listdir(out / "data" / "labelled_shards")) == [f"shard-00000{i}.tar" for i in range(3)]
    run_in(tmp_path, SHARDS_STATS)
    assert (out / "data" / "source_a" / "dedup_counts.sqlite").exists()
    assert (out / "data" / "source_b" / "dedup_counts.sqlite").exists()
    run_in(tmp_path, WEIGHTED, *TINY)
    assert (out / "results_inv_frequency" / "student_final.safetensors").exists()

    fresh = run_in(tmp_path, QUICKSTART, "--fresh", *TINY, "train.max_steps=1")
    assert f"removed the previous results in {out / 'results'}" in fresh and "step 1/1 (100%)" in fresh
    with open(out / "results" / "run_status.json") as f:
        assert json.load(f)["step"] == 1
    assert not (out / "results" / "eval").exists()  # the old results are gone ...
    data_now = {str(p): p.stat().st_mtime_ns for p in (out / "data").rglob("*") if p.is_file()}
    assert {path: data_now[path] for path in data_files} == data_files  # ... the demo data untouched


# README.md, "Classification KD" (line continuations joined).
CLS_TRAIN = (
    "radio distill -e specs/quickstart.yaml 'distill.teacher=[]' dataset.num_classes=3 "
    "'dataset.train_dataset.tar_data_sources=[]' dataset.train_dataset.images_dir=quickstart_out/data/labelled/train "
    "train.num_epochs=30 results_dir=quickstart_out/results_cls"
)
CLS_EVAL = "radio eval --results quickstart_out/results_cls --labelled quickstart_out/data/labelled/val"
CLS_EVAL_INIT = CLS_EVAL + " --init --out quickstart_out/results_cls/eval_init"
CLS_EXPORT = "radio export --results quickstart_out/results_cls --out quickstart_out/export_cls"


@pytest.mark.slow
def test_the_readme_classification_example_works(tmp_path):
    import timm  # noqa: F401  (the README snippet's eval of the timm call needs it)
    import torch

    from radio.quickstart import prepare_demo_assets

    os.symlink(os.path.join(REPO, "specs"), tmp_path / "specs")
    out = tmp_path / "quickstart_out"
    prepare_demo_assets(str(out))
    run_in(tmp_path, CLS_TRAIN, "logging.progress_bar=false", "dataset.workers=0")
    scores = {}
    for name, command, folder in (("trained", CLS_EVAL, "eval"), ("init", CLS_EVAL_INIT, "eval_init")):
        run_in(tmp_path, command)
        with open(out / "results_cls" / folder / "eval.json") as f:
            scores[name] = json.load(f)["classification"]["student"]["top1"]
        assert (out / "results_cls" / folder / "confusion_matrix.png").exists()
    assert scores["trained"] > 0.9 and scores["init"] < 0.6, scores  # 3 classes that differ in colour and shape
    run_in(tmp_path, CLS_EXPORT)
    with open(out / "export_cls" / "export.json") as f:
        call = json.load(f)["timm_call"]
    model = eval(call).eval()  # the README's snippet
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
