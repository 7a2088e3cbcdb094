"""``radio quickstart``: demo shards + demo teachers, then a tiny real distillation run on CPU."""

import glob
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from radio.errors import RadioError
from radio.run.layout import read_metrics

QUICKSTART_SPEC = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"
DEMO_SOURCES = (("source_a", 400, 11), ("source_b", 200, 22))  # name, images, seed
DEMO_TEACHERS = (("demo_vit_tiny_patch16", 1), ("demo_vit_tiny_patch14", 2))  # registry name, init seed


def demo_weights_path(out: str, name: str) -> str:
    return os.path.join(out, "weights", f"{name}.DEMO_RANDOM_INIT.safetensors")


def prepare_demo_assets(out: str) -> None:
    """Write what is missing: shards per source and random-init demo teacher weights."""
    from radio.data.synthetic import write_synthetic_shards
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


def run_quickstart(out: str, overrides: Sequence[str] = ()) -> Dict[str, Tuple[float, float]]:
    from radio.engine.loop import run
    from radio.run.spec import load_run_config

    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RadioError(f"--out {out!r} is a file; give a folder for the demo data, weights and results.")
    print(f"quickstart: demo data and DEMO random-init teacher weights under {out}")
    prepare_demo_assets(out)
    cfg = load_run_config(str(QUICKSTART_SPEC), quickstart_overrides(out) + list(overrides))
    result = run(cfg)
    losses = loss_start_end(result.results_dir, result.teacher_names)
    print("\nper-teacher distillation loss (first logging window -> last):")
    for name, (start, end) in losses.items():
        print(f"  {name:<12} {start:9.4f} -> {end:9.4f}  ({100 * (end - start) / abs(start):+.1f}%)")
    print(
        f"\nresults: {result.results_dir} (config.yaml, metrics.jsonl, checkpoints/, student_final.safetensors, *.png)"
    )
    return losses
