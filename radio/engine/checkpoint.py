"""Atomic training checkpoint folders and their discovery.

Layout of ``results_dir/checkpoints/step_XXXXXXX/`` (file names: ``radio/run/layout.py``; what goes in
them is ``engine/run_state.py``'s):
- ``model.safetensors``: the trained module (student + heads), consolidated fp32.
- ``normalizers.safetensors``: PHI-S / standardisation statistics and loss running state.
- ``optimizer.pt`` (DDP; tensors and plain values, read with ``weights_only=True``) or ``deepspeed/``
  (ZeRO: DeepSpeed's sharded engine state, one optimizer partition per rank, also read weights-only).
- ``rng_rank{R}.pt``, ``loader_rank{R}.json``, ``metrics_rank{R}.json``: per-rank RNG, data-loader state
  and the logging window in progress.
- ``trainer_state.json``: counters, LR scheduler, world size and engine; written last.

Every rank writes (and fsyncs) its files into ``.step_XXXXXXX.tmp``; the main rank adds
``trainer_state.json`` last and renames the folder, so a ``step_*`` folder is complete by construction; a
kill at any moment leaves at worst a stale temp folder, which the next save removes.
"""

import json
import os
import random
import shutil
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from radio.errors import CheckpointError, on_every_rank
from radio.run.layout import (
    STEP_DIR,
    TRAINER_STATE,
    checkpoints_root,
    free_space,
    list_complete_checkpoints,
    step_dir_name,
)


def resume_candidates(results_dir: str, explicit: Optional[str]) -> Tuple[List[str], bool]:
    """The checkpoints to try resuming from, best first, and whether they are the explicit one.

    Without ``explicit``: this run's complete checkpoints, newest first (the caller falls back past one that
    cannot be loaded). With it (``train.resume_training_checkpoint_path``): that one — unless one of this
    run's own checkpoints descends from it (its trainer state names it as ``origin``): then the run already
    resumed from it once, and a requeued job must continue from its own progress, not go back.
    """
    own = list(reversed(list_complete_checkpoints(results_dir)))
    if not explicit:
        return own, False
    if not os.path.isfile(os.path.join(explicit, TRAINER_STATE)):
        raise CheckpointError(
            f"train.resume_training_checkpoint_path={explicit!r} is not a complete checkpoint folder "
            f"(it must contain {TRAINER_STATE}); use one of {results_dir}/checkpoints/step_* or leave it unset "
            "to resume from the newest one."
        )
    origin = os.path.realpath(explicit)
    if any(_origin_of(path) == origin for path in own):
        return own, False
    return [explicit], True


def _origin_of(path: str) -> Optional[str]:
    try:
        return read_json(os.path.join(path, TRAINER_STATE)).get("origin")
    except (OSError, ValueError, AttributeError):
        return None


def step_folders_after(results_dir: str, step: int) -> List[str]:
    """``step_*`` folders (complete or not) of ``results_dir`` newer than ``step``."""
    root = checkpoints_root(results_dir)
    if not os.path.isdir(root):
        return []
    return sorted(
        os.path.join(root, name)
        for name in os.listdir(root)
        if STEP_DIR.match(name) and int(STEP_DIR.match(name).group(1)) > step
    )


def set_aside(path: str, why: str) -> str:
    """Rename a checkpoint folder out of discovery (``step_0000006.damaged``), keeping its files."""
    target, n = f"{path}.{why}", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.{why}{n}"
    os.rename(path, target)
    return target


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, pos, has_gauss, gauss = state["numpy_meta"]
    np.random.set_state((kind, state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    results_dir: str,
    step: int,
    write: Callable[[str], List[str]],
    trainer_state: dict,
    *,
    is_main: bool,
    agree: Callable[[Optional[str]], Optional[str]],
    keep: int,
) -> str:
    """Write checkpoint ``step`` atomically; returns its folder.

    ``write(folder)`` runs on every rank (it may hold collectives) and returns the files that rank wrote;
    they are fsynced before the main rank writes ``trainer_state`` (JSON) and renames the folder.
    ``agree(error)`` hands each rank's error (None: fine) to all and returns the first (a collective; it also
    serves as the barrier, ``engine/accel.first_error``). A write that fails on any rank — a full disk above
    all — removes the partial folder and raises the same ``CheckpointError`` on every rank; earlier
    checkpoints are untouched.
    """
    root = checkpoints_root(results_dir)
    final = os.path.join(root, step_dir_name(step))
    tmp = os.path.join(root, "." + step_dir_name(step) + ".tmp")
    if os.path.isfile(os.path.join(final, TRAINER_STATE)):
        # Only a run restarted after its last save gets here (nothing trained since): the folder already
        # holds this state, and replacing it would open a window with no complete checkpoint.
        agree(None)
        return final

    def phase(action, ranks_doing_it: bool) -> None:
        error = None
        if ranks_doing_it:
            try:
                action()
            except Exception as exc:  # a full disk, an unwritable folder ...: said once, clearly, below
                error = f"{type(exc).__name__}: {exc}"
        error = agree(error)
        if error is not None:
            if is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise on_every_rank(_write_error(results_dir, step, error))

    def prepare() -> None:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(final):  # a step folder without trainer_state.json: damaged, kept aside
            set_aside(final, "incomplete")
        os.makedirs(tmp)

    def write_and_sync() -> None:
        for path in write(tmp):  # on disk before trainer_state.json declares the folder complete
            _fsync(path)

    def commit() -> None:
        write_json(os.path.join(tmp, TRAINER_STATE), trainer_state)
        _fsync(os.path.join(tmp, TRAINER_STATE))
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)

    phase(prepare, is_main)
    phase(write_and_sync, True)
    phase(commit, is_main)
    if is_main:
        for stale in list_complete_checkpoints(results_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
        for name in os.listdir(root):
            if name.startswith(".") and name.endswith(".tmp"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    agree(None)
    return final


def _write_error(results_dir: str, step: int, error: str) -> CheckpointError:
    root = checkpoints_root(results_dir)
    complete = list_complete_checkpoints(results_dir)
    kept = f"the newest complete checkpoint is still {complete[-1]}" if complete else "no earlier checkpoint exists"
    return CheckpointError(
        f"could not write checkpoint {step_dir_name(step)} into {root} ({error}); {free_space(results_dir)} "
        f"(results_dir={results_dir!r}). The partial folder was removed and {kept}. Free some space (or fix the "
        "folder) and run the same command again to resume from it."
    )


def read_checkpoint_file(folder: str, name: str, reader: Callable[[str], object]):
    """``reader(folder/name)``; ``CheckpointError`` naming the file when it is missing or unreadable."""
    file = os.path.join(folder, name)
    if not os.path.isfile(file):
        raise CheckpointError(
            f"checkpoint {folder!r} is missing {name}; it was not written by this version or is damaged."
        )
    try:
        return reader(file)
    except Exception as exc:  # corrupt file: say which one
        raise CheckpointError(f"cannot read {file!r}: {type(exc).__name__}: {exc}") from None


def read_tensors(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _fsync(path: str) -> None:
    """Flush a file's or a folder's (its entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
