"""What W&B and TensorBoard show besides the logged rows: the run's name, group and tags, its resolved
config, the plots and a summary when it ends, and ``radio eval``'s results, added to the same W&B run and
TensorBoard log afterwards. Training (``radio/engine/metrics.py``) and ``radio eval`` share these.
"""

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from radio.run.layout import (
    LOSS_PLOT,
    MIXTURE_PLOT,
    STEP_DIR,
    TENSORBOARD_DIR,
    WANDB_RUN_ID_FILE,
    load_results_config,
)

WANDB_TAG_LIMIT = 64  # the longest tag W&B accepts
REPORT_PLOTS = (LOSS_PLOT, MIXTURE_PLOT)


@dataclass(frozen=True)
class RunDescription:
    """What the dashboards say about a run beyond its metrics (``radio/engine/run_description.describe_run``)."""

    tags: List[str]  # ``logging.wandb.tags`` then the automatic ones
    config: dict  # the resolved config with ``resolved_teachers`` and ``mixture_requested``
    requested_mixture: Dict[str, float]  # source name -> share of samples the loader's mixture targets


def wandb_identity(results_dir: str, wandb_cfg) -> Tuple[str, str]:
    """(name, group): ``logging.wandb.name`` / ``group``, else the results folder's name and its parent's, so
    runs kept side by side under one folder (a sweep) share a group."""
    folder = os.path.abspath(results_dir)
    return wandb_cfg.name or os.path.basename(folder), wandb_cfg.group or os.path.basename(os.path.dirname(folder))


def open_wandb_run(
    results_dir: str,
    wandb_cfg,
    *,
    tags: Optional[List[str]] = None,
    config: Optional[dict] = None,
    silent: bool = False,
):
    """``wandb.init`` of the run whose id is in ``results_dir/wandb_run_id.txt`` (made on first use): a
    restart and ``radio eval`` continue the same W&B run (offline: each in a folder of its own under
    ``results_dir/wandb``, see ``wandb_sync_hint``). ``silent``: without W&B's banner and run summary."""
    import wandb

    name, group = wandb_identity(results_dir, wandb_cfg)
    return wandb.init(
        project=wandb_cfg.project,
        entity=wandb_cfg.entity,
        name=name,
        group=group,
        mode=wandb_cfg.mode,
        tags=tags,
        dir=results_dir,
        config=config,
        id=wandb_run_id(results_dir),
        resume="allow",
        settings=wandb.Settings(silent=True) if silent else None,
    )


def wandb_sync_hint(results_dir: str) -> str:
    """How to upload an offline run. Every process that opened it (the first, each restart, each
    ``radio eval``) left an ``offline-run-<time>-<id>`` folder of the same id; ``wandb sync`` given their
    parent syncs them all, those of one id one after the other in order of start time (wandb's
    ``cli/beta_sync.py``, ``wandb sync --help``), so the W&B run gets every fragment in order. Syncing a
    folder alone uploads that fragment only."""
    return f"upload with `wandb sync {os.path.join(os.path.abspath(results_dir), 'wandb')}` (all its folders at once)"


def wandb_run_id(results_dir: str) -> str:
    import uuid

    path = os.path.join(results_dir, WANDB_RUN_ID_FILE)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(uuid.uuid4().hex[:12])
    with open(path) as f:
        return f.read().strip()


def tensorboard_writer(results_dir: str):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(results_dir, TENSORBOARD_DIR))


def describe_in_tensorboard(writer, name: str, group: str, description: RunDescription, step: int) -> None:
    """The run's identity, resolved config and requested mixture as text, and one chart per source holding
    its realised and requested share."""
    import yaml

    identity = {"name": name, "group": group, "tags": ", ".join(description.tags)}
    writer.add_text("run/identity", markdown_table(identity), step)
    config = yaml.safe_dump(description.config, sort_keys=False)
    writer.add_text("run/config", "\n".join("    " + line for line in config.splitlines()), step)
    writer.add_text("run/mixture_requested", markdown_table(description.requested_mixture), step)
    writer.add_custom_scalars(
        {
            "mixture": {
                source: ["Multiline", [f"mixture/{source}", f"mixture_requested/{source}"]]
                for source in description.requested_mixture
            }
        }
    )


def run_summary(rows: List[dict], status: str) -> dict:
    """The end of a run in a few numbers: status, the last logged step, images seen (all ranks), the mean
    images/s over the logging windows and the newest value of every loss (``final/loss/<teacher>[/<kind>]``)."""
    final: Dict[str, float] = {}
    for row in rows:
        final.update({f"final/{k}": v for k, v in row.items() if k.startswith("loss/") and v is not None})
    speeds = [r["images_per_s"] for r in rows if r.get("images_per_s") is not None]
    return {
        "status": status,
        "steps": rows[-1]["step"] if rows else 0,
        "images_seen": int(sum(r.get("images") or 0 for r in rows)),
        "mean_images_per_s": math.fsum(speeds) / len(speeds) if speeds else None,
        **final,
    }


def fresh_plots(results_dir: str, since: float) -> Dict[str, str]:
    """``report/<plot>`` -> path of the report's plots written after ``since`` (a time.time()): a stopped or
    failed run writes none, and older files belong to an earlier run in the folder."""
    found = {}
    for file in REPORT_PLOTS:
        path = os.path.join(results_dir, file)
        if os.path.isfile(path) and os.path.getmtime(path) >= since:
            found[f"report/{os.path.splitext(file)[0]}"] = path
    return found


def add_png(writer, tag: str, path: str, step: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    writer.add_image(tag, pixels, step, dataformats="HWC")


def markdown_table(values: dict) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in values.items()]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def finish_tensorboard(writer, summary: dict, pictures: Dict[str, str]) -> None:
    step = summary["steps"]
    writer.add_text("run/summary", markdown_table(summary), step)
    for tag, path in pictures.items():
        add_png(writer, tag, path, step)


def finish_wandb(run, summary: dict, pictures: Dict[str, str]) -> None:
    import wandb

    run.summary.update(summary)
    if pictures:
        run.log({tag: wandb.Image(path) for tag, path in pictures.items()})


def eval_scalars(result: dict) -> Dict[str, float]:
    """``radio eval``'s numbers (``radio/eval/evaluate.py`` ``evaluate_run``) under ``eval/`` names."""
    values = {}
    if "knn" in result:
        values["eval/knn_top1"] = result["knn"]["top1"]
    classification = result.get("classification", {})
    for who in ("student", "teacher"):
        if who in classification:
            values.update({f"eval/{who}_{k}": classification[who][k] for k in ("top1", "top5")})
    for teacher, scores in result.get("fidelity", {}).items():
        values.update({f"eval/fidelity/{teacher}/{k}": scores[k] for k in ("summary", "spatial") if k in scores})
    for source, scores in result.get("detection", {}).items():  # a detection run (radio/detection/run_files.py)
        for who in ("student", "teacher"):
            values.update({f"eval/{source}/{who}_{k}": v for k, v in scores.get(who, {}).items() if v is not None})
    for source, losses in result.get("held_out", {}).items():
        values.update({f"eval/{source}/held_out/{k.removeprefix('loss/')}": v for k, v in losses.items()})
    step = checkpoint_step(result)
    if step is not None:
        values["eval/checkpoint_step"] = step
    return values


def checkpoint_step(result: dict) -> Optional[int]:
    match = STEP_DIR.match(os.path.basename(result.get("checkpoint", "")))
    return int(match.group(1)) if match else None


def publish_eval_results(results_dir: str, result: dict) -> List[str]:
    """After ``radio eval``: ``report.html`` regenerated with ``result``, and the numbers and PCA picture
    added to the run's TensorBoard log and to its W&B run (resumed by the id in ``wandb_run_id.txt``, with
    the project and mode of the run's ``config.yaml``) when the run used them. Returns lines to print."""
    from radio.report.page import write_report_html

    if result.get("init"):  # an untrained reference, not this run's result: kept in eval.json only
        return ["the student as initialised is not added to the run's report or dashboards"]
    logging_cfg = load_results_config(results_dir)[0].logging
    notes = [f"report: {write_report_html(results_dir, result)}"]
    scalars = eval_scalars(result)
    pictures = {"eval/pca": result["pca_png"]} if result.get("pca_png") else {}
    if result.get("classification", {}).get("confusion_png"):
        pictures["eval/confusion_matrix"] = result["classification"]["confusion_png"]
    if logging_cfg.tensorboard:
        writer = tensorboard_writer(results_dir)
        step = checkpoint_step(result) or 0
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        writer.add_text("eval/results", markdown_table(scalars), step)
        for tag, path in pictures.items():
            add_png(writer, tag, path, step)
        writer.close()
    if logging_cfg.wandb.enable and os.path.isfile(os.path.join(results_dir, WANDB_RUN_ID_FILE)):
        notes.append(_publish_to_wandb(results_dir, logging_cfg.wandb, scalars, pictures))
    return notes


def _publish_to_wandb(results_dir: str, wandb_cfg, scalars: Dict[str, float], pictures: Dict[str, str]) -> str:
    import wandb

    try:
        run = open_wandb_run(results_dir, wandb_cfg, silent=True)  # the line returned says where they went
        folder = os.path.abspath(os.path.dirname(run.dir))
        run.log({**scalars, **{tag: wandb.Image(path) for tag, path in pictures.items()}})
        run.summary.update(scalars)
        run.finish()
    except Exception as exc:  # eval.json is written already: a W&B problem must not fail the command
        return f"note: the eval results did not reach W&B ({type(exc).__name__}: {exc})"
    line = f"eval results added to W&B run {run.id} ({wandb_cfg.mode}) in {folder}"
    return line + (f"; {wandb_sync_hint(results_dir)}" if wandb_cfg.mode == "offline" else "")
