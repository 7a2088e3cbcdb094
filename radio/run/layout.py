"""The results folder: the name of everything a run writes there, and the readers other commands use.

``results_dir/``
- ``config.yaml``: the resolved spec plus every teacher's effective settings (``resolved_teachers``),
  written once the run holds the folder; ``radio eval`` and ``radio export`` rebuild the run from it.
- ``teachers.json``: how each teacher loaded (file, detected layout, key counts, resampling, dtype, time).
- ``run_status.json``: how the last process ended (``finished``, ``stopped``: resumable, ``failed``).
- ``metrics.jsonl``: one row per logging window (``tensorboard/``, ``wandb/`` when enabled).
- ``.lock``: held while a run trains here; ``STOP``: asks that run to checkpoint and stop.
- ``checkpoints/step_XXXXXXX/``: ``model.safetensors`` (student + heads), ``normalizers.safetensors``,
  ``optimizer.pt`` or ``deepspeed/``, per-rank RNG / loader / metrics-window files and, written last,
  ``trainer_state.json`` (``radio/engine/checkpoint.py`` writes them atomically).
- ``student_final.safetensors`` + ``student_final.json``: the trained backbone (``detector_final/`` for
  ``task: detection``: the student detector as a transformers folder); ``loss_per_teacher.png``,
  ``data_mixture.png`` and ``report.html`` (both plots, the teachers, eval results): the report.
- ``eval/``: ``radio eval``'s ``eval.json``, ``pca.png`` and ``confusion_matrix.png`` (unless ``--out`` says
  otherwise).
"""

import json
import os
import re
import shutil
from typing import List, Optional, Tuple

from radio.errors import CheckpointError, RadioError

# Light on purpose: the stop handling imports this before torch is loaded; the config readers and
# writers import what they need when called.

CONFIG_FILE = "config.yaml"
TEACHERS_FILE = "teachers.json"
RUN_STATUS_FILE = "run_status.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
STOP_FILE = "STOP"
CHECKPOINTS_DIR = "checkpoints"
STUDENT_FINAL_FILE = "student_final.safetensors"
STUDENT_FINAL_META = "student_final.json"
DETECTOR_FINAL_DIR = "detector_final"  # task: detection: the student as a transformers folder
LOSS_PLOT = "loss_per_teacher.png"
MIXTURE_PLOT = "data_mixture.png"
REPORT_HTML = "report.html"  # both plots, the resolved teachers and the eval results on one page
WANDB_RUN_ID_FILE = "wandb_run_id.txt"  # the W&B run a restart continues and ``radio eval`` adds to
TENSORBOARD_DIR = "tensorboard"

# Inside a checkpoint folder.
STEP_DIR = re.compile(r"^step_(\d{7,})$")
TRAINER_STATE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
NORMALIZERS_FILE = "normalizers.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
DEEPSPEED_DIR = "deepspeed"  # DeepSpeed's sharded engine state (ZeRO runs)


def rank_files(rank: int) -> Tuple[str, str, str, str]:
    """One rank's files in a checkpoint folder: RNG streams, loader position, logging window in progress,
    and the normaliser statistics it has not merged with the other ranks' yet."""
    return (
        f"rng_rank{rank}.pt",
        f"loader_rank{rank}.json",
        f"metrics_rank{rank}.json",
        f"pending_statistics_rank{rank}.safetensors",
    )


# ``radio eval``: its default output folder (under results_dir) and what it writes there.
EVAL_DIR = "eval"
EVAL_FILE = "eval.json"
PCA_PICTURE = "pca.png"
CONFUSION_PICTURE = "confusion_matrix.png"  # classification runs evaluated with --labelled


def checkpoints_root(results_dir: str) -> str:
    return os.path.join(results_dir, CHECKPOINTS_DIR)


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_complete_checkpoints(results_dir: str) -> List[str]:
    """Complete checkpoint folders (those holding ``trainer_state.json``), oldest first."""
    root = checkpoints_root(results_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = STEP_DIR.match(name)
        if match and os.path.isfile(os.path.join(root, name, TRAINER_STATE)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def find_checkpoint_dir(results_dir: str, checkpoint: Optional[str]) -> str:
    """``checkpoint`` (a ``step_*`` folder or its ``model.safetensors``) or else the run's newest complete one."""
    if checkpoint:
        folder = os.path.dirname(checkpoint) if os.path.isfile(checkpoint) else checkpoint
        if not os.path.isfile(os.path.join(folder, MODEL_FILE)):
            raise CheckpointError(
                f"--checkpoint {checkpoint!r}: no {MODEL_FILE} there; pass a checkpoint folder "
                f"({results_dir}/{CHECKPOINTS_DIR}/step_*) or the {MODEL_FILE} inside one."
            )
        return folder
    complete = list_complete_checkpoints(results_dir)
    if not complete:
        raise CheckpointError(
            f"{results_dir}: no complete checkpoint under {checkpoints_root(results_dir)} (a step_* folder holding "
            f"{TRAINER_STATE}); train first or pass --checkpoint."
        )
    return complete[-1]


def free_space(path: str) -> str:
    """ "N MiB free there" for the file system holding ``path`` (or its nearest existing parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return f"{shutil.disk_usage(path or '.').free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def resolved_config(cfg, teachers: list) -> dict:
    """The run's config as plain data with ``resolved_teachers``: ``config.yaml`` and the dashboards' config."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    data["resolved_teachers"] = [t.as_dict() for t in teachers]
    return data


def write_resolved_config(cfg, teachers: list, results_dir: str) -> None:
    """``config.yaml``: the run's config with ``resolved_teachers`` (written atomically)."""
    from omegaconf import OmegaConf

    data = resolved_config(cfg, teachers)
    tmp = os.path.join(results_dir, f".{CONFIG_FILE}.tmp")
    try:
        os.makedirs(results_dir, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(OmegaConf.to_yaml(OmegaConf.create(data)))
        os.replace(tmp, os.path.join(results_dir, CONFIG_FILE))
    except OSError as exc:
        raise RadioError(
            f"cannot write {results_dir}/{CONFIG_FILE}: {exc.strerror} ({free_space(results_dir)})."
        ) from None


def load_results_config(results_dir: str) -> Tuple[object, list]:
    """``results_dir/config.yaml`` -> (RunConfig, [ResolvedTeacher] as written by the run); a detection run's
    gives (DetectionRunConfig, [])."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from radio.config.schema import RunConfig
    from radio.run.teachers import ResolvedTeacher

    if not os.path.isdir(results_dir):
        raise RadioError(f"results directory {results_dir!r} does not exist (pass the results_dir of a finished run).")
    path = os.path.join(results_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RadioError(
            f"{path} not found: {results_dir!r} is not a radio results directory (a run writes {CONFIG_FILE} there "
            "when it starts)."
        )
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
        resolved = raw.pop("resolved_teachers")
        if raw.get("task") == "detection":
            from radio.detection.schema import DetectionRunConfig

            return OmegaConf.merge(OmegaConf.structured(DetectionRunConfig), raw), []
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
    except (OmegaConfBaseException, KeyError, AttributeError, ValueError) as exc:
        raise RadioError(f"{path}: not a resolved radio run config ({type(exc).__name__}: {exc})") from None
    derived = ("uses_summary", "uses_spatial")  # recomputed from the mode
    teachers = [ResolvedTeacher(**{k: v for k, v in t.items() if k not in derived}) for t in resolved]
    return cfg, teachers


def write_teachers_file(results_dir: str, records: list) -> None:
    """``teachers.json``: ``radio/run/teacher_report.teacher_load_records`` of the run's teachers."""
    tmp = os.path.join(results_dir, f".{TEACHERS_FILE}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(records, f, indent=2)
        os.replace(tmp, os.path.join(results_dir, TEACHERS_FILE))
    except OSError as exc:
        raise RadioError(
            f"cannot write {results_dir}/{TEACHERS_FILE}: {exc.strerror} ({free_space(results_dir)})."
        ) from None


def write_run_status(results_dir: str, status: str, step: int, detail: str = "") -> None:
    """``run_status.json``: how the run's last process ended — ``finished``, ``stopped`` (resumable: run the
    same command again) or ``failed`` — for job scripts, which cannot see a rank's exit status through
    ``accelerate launch``."""
    tmp = os.path.join(results_dir, f".{RUN_STATUS_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump({"status": status, "step": step, "detail": detail}, f)
    os.replace(tmp, os.path.join(results_dir, RUN_STATUS_FILE))


def read_run_status(results_dir: str, newer_than: float = 0.0) -> Optional[str]:
    """The ``status`` in ``run_status.json`` if it was written after ``newer_than`` (a time.time()), else None."""
    record = read_run_status_record(results_dir, newer_than)
    return record.get("status") if record else None


def read_run_status_record(results_dir: str, newer_than: float = 0.0) -> Optional[dict]:
    """``run_status.json`` (status, step, ...) if it was written after ``newer_than``; None if absent, older
    or unreadable."""
    path = os.path.join(results_dir, RUN_STATUS_FILE)
    try:
        if os.path.getmtime(path) < newer_than:
            return None
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_metrics(results_dir: str) -> List[dict]:
    """The rows of ``metrics.jsonl`` (empty when the run logged nothing yet)."""
    path = os.path.join(results_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
