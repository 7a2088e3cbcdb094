"""Training-step throughput and where every millisecond goes: the real loop against a bare loop doing the same
model work, in one process.

Variants, all on the same spec, models (random weights) and batch size:
- (a) ``pipeline``: the real loop (``radio.engine.loop.run``) on real tar shards of JPEGs;
- (b) ``engine``: the real loop on batches decoded once and replayed from memory (no decode);
- (c) ``bare``: the same work as a hand-written loop would do it, on synthetic uint8 crops: every teacher's
  view and forward, the spatial targets through their normalisers (statistics observed, refreshed on the
  spec's schedule, transform applied), the student's view, forward + backward through the heads with the
  spec's loss per teacher, gradient clipping when the spec clips, one AdamW step — no checks, masking,
  metrics, accumulation contexts, host reads or data loader;
- ``models``: (c) without the objective's own work (an MSE per target, no normalisers): the models alone.

Prints img/s and MFU per variant, the ratios (b)/(c) (what the engine costs beyond the work a bare loop does)
and (a)/(c) (what the data pipeline adds), and a per-phase table (ms per optimizer step) from separate short
runs of every variant whose phases are timed with a device synchronisation at each boundary
(``radio/phases.py``: those runs are slower; their table explains a step, the untimed runs measure it). The
last line is one JSON object: ``engine_over_bare``, ``pipeline_over_bare``, ``engine_over_models``, ``img_s``,
``mfu`` and ``phases_ms`` per variant, and the settings.

Presets:
- ``tiny`` (CPU, seconds): the quickstart's shapes (C-RADIO tiny student at 64 px, two demo teachers),
  fp32, batch 16, the quickstart's demo shards;
- ``seed`` (one GPU): the seed example (C-RADIO ViT-B/16 student at 224, C-RADIO ViT-H/16 teacher at 432 and
  SigLIP ViT-H/14 at 224, bf16, batch 32) on synthetic 500x375 JPEG shards.

    python tools/bench/step_throughput.py --preset tiny
    python tools/bench/step_throughput.py --preset seed --workers 8
    ... key=value                     # any spec override, e.g. distill.teacher.0.input_size=224

On a GPU machine, ``tools/bench/gpu_session.sh`` runs it with the wheels ``tools/bench/gpu_wheels.sh`` fetched for
what the GPU image lacks (omegaconf, webdataset, simplejpeg, torchao).
"""

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from radio.data.synthetic import write_synthetic_shards
from radio.data.views import make_view
from radio.engine.flops import peak_tflops, step_flops
from radio.engine.loop import Instrumentation, run
from radio.losses.spatial import match_grids
from radio.models.registry import create_model
from radio.phases import NO_PHASES, PhaseTimes
from radio.quickstart import prepare_demo_assets, quickstart_overrides
from radio.run.build import build_components, teacher_outputs
from radio.run.spec import load_run_config
from radio.run.teachers import resolve_teachers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
REPLAYED_BATCHES = 8  # distinct batches variant (b) decodes once and cycles through


def tiny_config(work: str, workers: int, extra: List[str]):
    demo = os.path.join(work, "demo")
    prepare_demo_assets(demo)
    overrides = quickstart_overrides(demo)[1:] + [
        "dataset.batch_size=16",
        f"dataset.workers={workers}",
        "train.num_epochs=1000",
        "train.checkpoint_interval=1000",  # no checkpoint inside the timed steps
        "logging.progress_bar=false",
    ]
    return os.path.join(REPO, "specs", "quickstart.yaml"), overrides + extra


def seed_config(work: str, workers: int, extra: List[str]):
    """The seed example with random-weight teacher files and synthetic web-size JPEG shards."""
    spec = os.path.join(REPO, "specs", "radio_multiteacher.yaml")
    cfg = load_run_config(spec, ["results_dir=/unused", "dataset.train_dataset.data_weight_mode=none", *extra])
    overrides = [
        "dataset.train_dataset.data_weight_mode=none",
        "dataset.train_dataset.native_resolution_filter.min_short_side=null",
        f"dataset.workers={workers}",
        "train.num_epochs=1000",
        "train.checkpoint_interval=1000",
        "logging.progress_bar=false",
    ]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for i, teacher in enumerate(resolve_teachers(cfg)):
        path = os.path.join(work, f"teacher{i}.safetensors")
        with torch.device(device):
            model = create_model(teacher.backbone_type, img_size=teacher.input_size)
        save_file({k: v.to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()}, path)
        del model
        overrides.append(f"distill.teacher.{i}.pretrained_teacher_model_path={path}")
    for i, source in enumerate(cfg.dataset.train_dataset.tar_data_sources):
        root = os.path.join(work, f"source{i}")
        write_synthetic_shards(root, 1024, 256, seed=i, size_range=(375, 500))
        overrides += [
            f"dataset.train_dataset.tar_data_sources.{i}.root_dir={root}",
            f"dataset.train_dataset.tar_data_sources.{i}.samples_per_file=256",
            f"dataset.train_dataset.tar_data_sources.{i}.steps_per_epoch=1000",
        ]
    return spec, overrides + extra


class StepClock:
    """Wall time from the end of step ``warmup`` to the end of the last step (device synchronised there)."""

    def __init__(self, warmup: int, steps: int, device: torch.device, phases=None, now=time.perf_counter):
        self.warmup, self.steps, self.device, self.phases, self.now = warmup, steps, device, phases, now
        self.started = self.ended = None

    def __call__(self, step: int) -> None:
        if step == self.warmup or step == self.steps:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if step == self.warmup:
                self.started = self.now()
                if self.phases is not None:
                    self.phases.reset()
            else:
                self.ended = self.now()

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def replay(batches, count: int):
    """The first ``count`` batches, decoded once, then cycled forever (variant b)."""
    kept = [next(batches) for _ in range(count)]
    return itertools.cycle(kept)


def engine_run(spec: str, overrides: List[str], work: str, tag: str, args, *, in_memory: bool, timed: bool):
    """One real-loop run of ``args.steps`` steps; returns (img/s over the steps after warm-up, phases ms)."""
    results = os.path.join(work, f"results_{tag}")
    cfg = load_run_config(spec, [*overrides, f"results_dir={results}", f"train.max_steps={args.steps}"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    phases = PhaseTimes(device) if timed else None
    clock = StepClock(args.warmup, args.steps, device, phases, CLOCKS[args.clock])
    instrument = Instrumentation(
        phases=phases if timed else NO_PHASES,
        batches=(lambda b: replay(b, REPLAYED_BATCHES)) if in_memory else None,
        after_step=clock,
    )
    run(cfg, instrument=instrument)
    measured = args.steps - args.warmup
    img_s = measured * cfg.dataset.batch_size * cfg.train.grad_accumulation_steps / clock.seconds
    return img_s, (phases.per_step_ms(measured) if timed else {})


def bare_run(spec: str, overrides: List[str], work: str, args, timed: bool = False, objective: bool = True):
    """Variant (c): the same work with nothing around it. Returns (img/s, FLOPs per image, phases ms).

    ``objective``: the spec's objective as a hand-written loop would compute it — each spatial teacher's
    targets through its normaliser (statistics observed every step, refreshed on the spec's schedule, the
    transform applied), the spec's loss per teacher weighted λ_i / N. Without it (variant ``models``): the
    models alone, an MSE per target and no normalisers.
    """
    cfg = load_run_config(spec, [*overrides, f"results_dir={os.path.join(work, 'results_bare')}"])
    specs = resolve_teachers(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = build_components(cfg, specs, device=device, rank=0, world_size=1)
    model = parts.model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.optim.lr)
    sizes = parts.plan.sizes_for_step(0)
    side = parts.plan.max_size(0)
    batch = cfg.dataset.batch_size
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
    student = parts.plan.student
    bf16 = cfg.train.precision == "bf16"
    clip = cfg.train.clip_grad_norm
    phases = PhaseTimes(device) if timed else NO_PHASES
    weights = {t.name: t.loss_lambda / len(specs) for t in specs}

    def targets(outputs) -> Dict[str, Dict[str, torch.Tensor]]:
        kinds = {}
        for t in specs:
            out, kinds[t.name] = outputs[t.name], {}
            if t.uses_summary:
                kinds[t.name]["summary"] = out.summary
            if t.uses_spatial:
                kinds[t.name]["spatial"] = out.spatial
                if objective:
                    norm = parts.normalizers[t.name]
                    norm.observe(out.spatial, starts_step=True)
                    norm.refresh_if_due()
                    kinds[t.name]["spatial"] = norm(out.spatial)
        return kinds

    def loss_of(preds, kinds) -> torch.Tensor:
        loss = 0.0
        for t in specs:
            if objective:
                loss = loss + weights[t.name] * parts.criteria[t.name](preds[t.name], kinds[t.name])["total"]
                continue
            for kind, target in kinds[t.name].items():
                pred = preds[t.name][kind].float()
                if kind == "spatial":
                    pred, target = match_grids(pred, target)
                loss = loss + F.mse_loss(pred, target)
        return loss

    def step() -> None:
        outputs = teacher_outputs(parts.teachers, specs, images, sizes, phases)
        with phases.phase("normalizers") if objective else contextlib.nullcontext():
            kinds = targets(outputs)
        with phases.phase("student_forward_backward"):
            x = make_view(images, sizes["student"], student.mean, student.std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_of(model(x), kinds)
            loss.backward()
        with phases.phase("optimizer"):
            if clip:  # clipping is optimizer work the spec asks for (train.clip_grad_norm, on by default)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if timed:
        phases.reset()
    now = CLOCKS[args.clock]
    started = now()
    for _ in range(args.steps - args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    img_s = (args.steps - args.warmup) * batch / (now() - started)
    flops = step_flops(model.student, specs, parts.teachers).per_image(sizes)
    return img_s, flops, (phases.per_step_ms(args.steps - args.warmup) if timed else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "seed"), default="tiny", help="shapes and models (default tiny)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: tiny 60, seed 40)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing starts (default 10)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: tiny 1, seed 8)")
    parser.add_argument(
        "--phase-steps", type=int, default=None, help="steps of the phase-timed runs (default: --steps)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="measured runs per variant, the best kept (default: tiny 3, seed 1)"
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip variant (a) (quicker switch comparisons)")
    parser.add_argument("--no-phases", action="store_true", help="skip the phase-timed runs")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="what img/s is measured against (default wall): wall time, or this process's CPU time (on a shared CPU machine "
        "other load barely moves it; it leaves out DataLoader workers, so it suits (b)/(c), not (a))",
    )
    parser.add_argument("overrides", nargs="*", help="key=value spec overrides")
    args = parser.parse_args()
    tiny = args.preset == "tiny"
    args.steps = args.steps or (60 if tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else 10
    workers = args.workers if args.workers is not None else (1 if tiny else 8)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not tiny and device.type != "cuda":
        print("note: --preset seed builds two ViT-H teachers and is meant for a GPU; on a CPU it takes hours.")
    with tempfile.TemporaryDirectory() as work:
        spec, overrides = (tiny_config if tiny else seed_config)(work, workers, list(args.overrides))
        variants = ("bare", "models", "engine") + (() if args.no_pipeline else ("pipeline",))
        img_s: Dict[str, float] = {name: 0.0 for name in variants}
        phases_ms: Dict[str, Dict[str, float]] = {}

        def measure(name: str, tag: str, run_args, timed: bool):
            if name in ("bare", "models"):
                return bare_run(spec, overrides, work, run_args, timed=timed, objective=name == "bare")
            rate, phases = engine_run(spec, overrides, work, tag, run_args, in_memory=name == "engine", timed=timed)
            return rate, None, phases

        # Variants alternate, best of ``repeats`` each: load from other processes on a shared machine only
        # ever slows a run down.
        flops = 0.0  # per image, from the bare run (the first variant)
        for repeat in range(args.repeats or (3 if tiny else 1)):
            for name in variants:
                rate, per_image, _ = measure(name, f"{name}{repeat}", args, timed=False)
                img_s[name] = max(img_s[name], rate)
                if per_image is not None:
                    flops = per_image
        if not args.no_phases:
            timed = argparse.Namespace(steps=args.phase_steps or args.steps, warmup=args.warmup, clock="wall")
            for name in variants:
                _, _, phases_ms[name] = measure(name, f"{name}_timed", timed, timed=True)
    peak = peak_tflops(device)
    mfu = {k: (v * flops / 1e12 / peak if peak else None) for k, v in img_s.items()}
    print(
        f"preset {args.preset} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
        f"{flops / 1e9:.3g} GFLOP per image, {args.steps - args.warmup} timed steps per variant, {args.clock} clock"
    )
    if args.clock == "cpu" and "pipeline" in variants:
        print("note: --clock cpu leaves out the DataLoader workers' decoding: read (a) as wall-clock only")
    print("| variant | img/s | MFU | ratio to bare |")
    print("|---|---|---|---|")
    for name in variants:
        ratio = img_s[name] / img_s["bare"]
        print(f"| {name} | {img_s[name]:.1f} | {'-' if mfu[name] is None else f'{mfu[name]:.3f}'} | {ratio:.3f} |")
    if phases_ms:
        names = list(dict.fromkeys(itertools.chain.from_iterable(phases_ms.values())))
        print("\n| phase (ms per step, synchronised) | " + " | ".join(variants) + " |")
        print("|---|" + "---|" * len(variants))
        for name in names:
            cells = [f"{phases_ms[v][name]:.2f}" if name in phases_ms[v] else "—" for v in variants]
            print(f"| {name} | " + " | ".join(cells) + " |")
        print("| total | " + " | ".join(f"{sum(phases_ms[v].values()):.2f}" for v in variants) + " |")
    summary = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "workers": workers,
        "steps_timed": args.steps - args.warmup,
        "flops_per_image": flops,
        "img_s": img_s,
        "mfu": mfu,
        "engine_over_bare": img_s["engine"] / img_s["bare"],
        "engine_over_models": img_s["engine"] / img_s["models"],
        "pipeline_over_bare": img_s["pipeline"] / img_s["bare"] if "pipeline" in img_s else None,
        "phases_ms": phases_ms,
        "clock": args.clock,
        "overrides": list(args.overrides),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
