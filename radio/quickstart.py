"""``radio quickstart``: demo shards + demo teachers, then a tiny real distillation run on CPU.

It also writes a small labelled split (``data/labelled/{train,val}/<class>/*.jpg``) for ``radio eval
--knn-train/--knn-val``. A re-run resumes a run that did not finish and says so; a finished one is not
trained again (``--fresh`` starts over: only the results folder is removed, never the demo data or weights).
"""

import glob
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from radio.errors import RadioError
from radio.run.layout import (
    CONFIG_FILE,
    RUN_STATUS_FILE,
    list_complete_checkpoints,
    read_metrics,
    read_run_status_record,
)

QUICKSTART_SPEC = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"
DEMO_SOURCES = (("source_a", 400, 11), ("source_b", 200, 22))  # name, images, seed
DEMO_TEACHERS = (("demo_vit_tiny_patch16", 1), ("demo_vit_tiny_patch14", 2))  # registry name, init seed
LABELLED_SPLITS = {"train": 20, "val": 10}  # images per class
LABELLED_SEED = 33


def labelled_dir(out: str, split: str) -> str:
    """The labelled demo split ``split`` (class sub-folders), for ``radio eval --knn-train/--knn-val``."""
    return os.path.join(out, "data", "labelled", split)


def demo_weights_path(out: str, name: str) -> str:
    return os.path.join(out, "weights", f"{name}.DEMO_RANDOM_INIT.safetensors")


def prepare_demo_assets(out: str) -> None:
    """Write what is missing: shards per source, random-init demo teacher weights, the labelled split."""
    from radio.data.synthetic import write_labelled_folders, write_synthetic_shards
    from radio.models.demo import save_demo_teacher

    for name, count, seed in DEMO_SOURCES:
        root = os.path.join(out, "data", name)
        if not glob.glob(os.path.join(root, "*.tar")):
            write_synthetic_shards(root, count, 100, seed=seed, size_range=(64, 200), prefix=name)
    for name, seed in DEMO_TEACHERS:
        path = demo_weights_path(out, name)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_demo_teacher(name, path, seed=seed)
    if not os.path.isdir(labelled_dir(out, "val")):
        write_labelled_folders(os.path.dirname(labelled_dir(out, "val")), LABELLED_SPLITS, seed=LABELLED_SEED)


def quickstart_overrides(out: str) -> List[str]:
    overrides = [f"results_dir={os.path.join(out, 'results')}"]
    for i, (name, _, _) in enumerate(DEMO_SOURCES):
        overrides.append(f"dataset.train_dataset.tar_data_sources.{i}.root_dir={os.path.join(out, 'data', name)}")
    for i, (name, _) in enumerate(DEMO_TEACHERS):
        overrides.append(f"distill.teacher.{i}.pretrained_teacher_model_path={demo_weights_path(out, name)}")
    return overrides


def loss_start_end(results_dir: str, teacher_names: Sequence[str]) -> Dict[str, Tuple[float, float]]:
    """Each teacher's loss in the first and in the last logging window of the run."""
    rows = read_metrics(results_dir)
    result = {}
    for name in teacher_names:
        values = [r[f"loss/{name}"] for r in rows if r.get(f"loss/{name}") is not None]
        if values:
            result[name] = (values[0], values[-1])
    return result


def finished_step(results_dir: str) -> Optional[int]:
    """The step a finished run in ``results_dir`` ended at (``run_status.json``); None if it did not finish."""
    record = read_run_status_record(results_dir)
    return int(record.get("step", 0)) if record and record.get("status") == "finished" else None


def remove_results(results_dir: str) -> bool:
    """``--fresh``: delete the previous run's results folder (True if there was one). Refused while a run
    holds it, and for a folder that does not look like a run's results (a results_dir override may point
    anywhere)."""
    from radio.engine.lock import ResultsDirLock

    if not os.path.isdir(results_dir):
        return False
    entries = set(os.listdir(results_dir))
    if entries and not entries & {CONFIG_FILE, RUN_STATUS_FILE, "checkpoints", ".lock"}:
        raise RadioError(
            f"--fresh: {results_dir} does not look like a run's results folder (no {CONFIG_FILE}, {RUN_STATUS_FILE} "
            "or checkpoints/); not deleting it. Remove it yourself or give another results_dir."
        )
    lock = ResultsDirLock(results_dir)
    in_use = lock.acquire()
    if in_use:
        raise RadioError(f"--fresh: {in_use}")
    try:
        shutil.rmtree(results_dir)
    finally:
        lock.release()
    return True


def run_quickstart(
    out: str, overrides: Sequence[str] = (), fresh: bool = False
) -> Optional[Dict[str, Tuple[float, float]]]:
    """Prepare the demo assets and run (or resume) the quickstart; returns each teacher's loss in the first
    and last logging window, or None when the run was stopped before it finished (it resumes on a re-run)."""
    from radio.run.spec import load_run_config

    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RadioError(f"--out {out!r} is a file; give a folder for the demo data, weights and results.")
    print(f"quickstart: demo data and DEMO random-init teacher weights under {out}")
    prepare_demo_assets(out)
    cfg = load_run_config(str(QUICKSTART_SPEC), quickstart_overrides(out) + list(overrides))
    results_dir = os.path.abspath(cfg.results_dir)
    if fresh:
        if remove_results(results_dir):
            print(f"quickstart: --fresh: removed the previous results in {results_dir} (demo data and weights kept)")
    else:
        done = finished_step(results_dir)
        if done is not None:
            print(
                f"quickstart: the run in {results_dir} finished at step {done}; nothing to do — "
                "`radio quickstart --fresh` starts over (also to train with other settings)."
            )
            from radio.run.teachers import resolve_teachers

            return _report(out, results_dir, [t.name for t in resolve_teachers(cfg)])
        if list_complete_checkpoints(results_dir):
            print(
                f"quickstart: continuing the unfinished run in {results_dir} from its newest checkpoint "
                "(`radio quickstart --fresh` starts over)"
            )
    from radio.engine.loop import run

    result = run(cfg)
    if result.stopped_early:  # the loop has said where it stopped and how to resume; no summary of a partial run
        return None
    return _report(out, result.results_dir, result.teacher_names)


def _report(out: str, results_dir: str, teacher_names: Sequence[str]) -> Dict[str, Tuple[float, float]]:
    losses = loss_start_end(results_dir, teacher_names)
    print("\nper-teacher distillation loss (first logging window -> last):")
    for name, (start, end) in losses.items():
        print(f"  {name:<12} {start:9.4f} -> {end:9.4f}  ({100 * (end - start) / abs(start):+.1f}%)")
    print(f"\nresults: {results_dir} (config.yaml, metrics.jsonl, checkpoints/, student_final.safetensors, *.png)")
    print(
        f"evaluate: radio eval --results {results_dir} --knn-train {labelled_dir(out, 'train')} "
        f"--knn-val {labelled_dir(out, 'val')}"
    )
    return losses
