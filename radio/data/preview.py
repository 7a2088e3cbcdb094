"""``radio data preview``: what the training loader would feed, step by step, before a long run."""

import json
from collections import Counter
from typing import Dict, List, Optional, TextIO

from radio.data.loader import TrainLoader
from radio.data.mixture import MixtureEmitter
from radio.data.views import ViewPlan


def run_plan(cfg) -> ViewPlan:
    """The view plan ``radio distill`` uses for this config (sizes decide how crops are decoded)."""
    from radio.models.registry import get_model_info
    from radio.run.build import build_view_plan
    from radio.run.teachers import resolve_teachers

    student_patch = get_model_info(cfg.model.backbone.type).patch_size
    return build_view_plan(cfg, resolve_teachers(cfg), student_patch)


def teacher_input_notes(cfg) -> Dict[str, str]:
    """Per teacher whose input is not its view as is (mosaic, FeatSharp): how the step's size becomes its input."""
    from radio.run.build import featsharp_input_factor
    from radio.run.teachers import resolve_teachers

    notes = {}
    for t in resolve_teachers(cfg):
        if t.mosaic > 1:
            k = t.mosaic
            notes[t.name] = (
                f"{k}x{k} mosaic: {k * k} samples' views tiled into one teacher input {k}x their size "
                f"({t.input_size // k} px views -> {t.input_size} px at input_size)"
            )
        elif t.adaptor:
            f = featsharp_input_factor(t)
            if f > 1:
                notes[t.name] = (
                    f"FeatSharp {f}x: the view is {f}x the teacher's {t.input_size} px; 1 + {f * f} forwards at "
                    f"{t.input_size} px, targets on a {t.input_size // t.patch_size * f}x{t.input_size // t.patch_size * f} grid"
                )
            else:
                notes[t.name] = f"FeatSharp de-biasing only (do_upsample false): {t.input_size} px"
    return notes


def preview(
    cfg, *, steps: int, start_step: int = 0, world_size: int = 1, rank: int = 0, workers: Optional[int] = None
) -> Dict[str, object]:
    """Steps ``start_step .. start_step+steps-1`` of rank ``rank``: per step the view sizes and each sample's
    key and source; then the realised mixture over those steps, the reader counters, and how mosaic and
    FeatSharp teachers turn their view into their input.

    Steps before ``start_step`` are read (the filters must see them to know what is used) but not reported.
    """
    if workers is not None:
        cfg.dataset.workers = workers
    loader = TrainLoader(cfg.dataset, run_plan(cfg), seed=cfg.train.seed, rank=rank, world_size=world_size)
    names = loader.source_names
    report_steps: List[dict] = []
    realised: Counter = Counter()
    counters: Dict[str, int] = {}
    for batch in loader:
        if batch.step >= start_step + steps:
            break
        counters = batch.counters
        if batch.step < start_step:
            continue
        sources = [names[i] for i in batch.sources.tolist()]
        realised.update(sources)
        report_steps.append(
            {
                "step": batch.step,
                "sizes": batch.sizes,
                "samples": [{"key": key, "source": source} for key, source in zip(batch.keys, sources)],
            }
        )
    shares = MixtureEmitter([s.scale_factor for s in loader.sources]).shares
    total = max(sum(realised.values()), 1)
    return {
        "rank": rank,
        "world_size": world_size,
        "steps_per_epoch": loader.steps_per_epoch,
        "teacher_inputs": teacher_input_notes(cfg),
        "steps": report_steps,
        "mixture": {
            name: {"requested": share, "samples": realised[name], "realised": realised[name] / total}
            for name, share in zip(names, shares)
        },
        "counters": dict(sorted(counters.items())),
    }


def print_preview(report: Dict[str, object], out: TextIO, as_json: bool = False) -> None:
    if as_json:
        json.dump(report, out, indent=1)
        out.write("\n")
        return
    out.write(f"rank {report['rank']} of {report['world_size']}, {report['steps_per_epoch']} steps per epoch\n")
    out.write("sizes: each view's side in pixels per sample (one crop per sample, decoded at the largest)\n")
    for name, note in report["teacher_inputs"].items():
        out.write(f"  {name}: {note}\n")
    for step in report["steps"]:
        sizes = " ".join(f"{name}={size}" for name, size in step["sizes"].items())
        out.write(f"step {step['step']}  ({sizes})\n")
        for index, sample in enumerate(step["samples"]):
            out.write(f"  {index:4d}  {sample['source']:<20s} {sample['key']}\n")
    out.write("mixture over these steps (source: samples, realised share / requested share):\n")
    for name, row in report["mixture"].items():
        out.write(f"  {name:<20s} {row['samples']:8d}  {row['realised']:.4f} / {row['requested']:.4f}\n")
    out.write("reader counters (cumulative from step 0):\n")
    for name, value in report["counters"].items():
        out.write(f"  {name:<40s} {value}\n")
