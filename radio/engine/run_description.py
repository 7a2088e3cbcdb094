"""The training run as the dashboards describe it (``radio/report/dashboards.py``): its tags, resolved
config with the resolved teachers, and the mixture the loader was asked for."""

from typing import Dict, List

from radio.report.dashboards import WANDB_TAG_LIMIT, RunDescription
from radio.run.layout import resolved_config


def describe_run(cfg, teachers: list, loader, accelerator) -> RunDescription:
    """teachers: the run's ``ResolvedTeacher`` list (may be empty: a label-only run); loader: its
    ``TrainLoader``, whose sources and weights give the requested mixture."""
    requested = requested_mixture(loader.source_names, loader.weights)
    config = resolved_config(cfg, teachers)
    config["mixture_requested"] = requested
    return RunDescription(run_tags(cfg, teachers, engine_name(accelerator)), config, requested)


def requested_mixture(source_names: List[str], weights: List[float]) -> Dict[str, float]:
    """The shares the loader's ``MixtureEmitter`` draws the sources in (its exact integer weights)."""
    from radio.data.mixture import MixtureEmitter

    return dict(zip(source_names, MixtureEmitter(weights).shares))


def engine_name(accelerator) -> str:
    from radio.engine.accel import uses_deepspeed

    if uses_deepspeed(accelerator):
        return "deepspeed"
    return "ddp" if accelerator.num_processes > 1 else "single"


def run_tags(cfg, teachers: list, engine: str) -> List[str]:
    """The spec's tags, then student type, teacher names, precision and engine (duplicates dropped)."""
    teacher_tags = [f"teacher:{t.name}" for t in teachers] or ["teacher:none"]
    return combined_tags(cfg, [f"student:{cfg.model.backbone.type}", *teacher_tags], engine)


def combined_tags(cfg, described: List[str], engine: str) -> List[str]:
    """The spec's tags, then ``described`` (student, teachers), precision and engine; duplicates dropped, each
    cut to W&B's tag length."""
    automatic = [*described, f"precision:{cfg.train.precision}", f"engine:{engine}"]
    return list(dict.fromkeys(str(tag)[:WANDB_TAG_LIMIT] for tag in [*cfg.logging.wandb.tags, *automatic]))
