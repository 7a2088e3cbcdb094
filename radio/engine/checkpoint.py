"""Atomic training checkpoint folders and their discovery.

Layout of ``results_dir/checkpoints/step_XXXXXXX/`` (what goes in it is ``engine/run_state.py``'s):
- ``model.safetensors``: the trained module (student + heads), consolidated fp32.
- ``normalizers.safetensors``: PHI-S / standardisation statistics and loss running state.
- ``optimizer.pt`` (DDP; tensors and plain values, read with ``weights_only=True``) or ``deepspeed/``
  (ZeRO: DeepSpeed's sharded engine state, one optimizer partition per rank, also read weights-only).
- ``rng_rank{R}.pt``, ``loader_rank{R}.json``: per-rank RNG and data-loader state.
- ``trainer_state.json``: counters, LR scheduler, world size and engine; written last.

Every rank writes (and fsyncs) its files into ``.step_XXXXXXX.tmp``; the main rank adds
``trainer_state.json`` last and renames the folder, so a ``step_*`` folder is complete by construction; a
kill at any moment leaves at worst a stale temp folder, which the next save removes.
"""

import json
import os
import random
import re
import shutil
from typing import Callable, List, Optional

import numpy as np
import torch

from radio.errors import CheckpointError

STEP_DIR = re.compile(r"^step_(\d{7,})$")
TRAINER_STATE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
NORMALIZERS_FILE = "normalizers.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def checkpoints_root(results_dir: str) -> str:
    return os.path.join(results_dir, "checkpoints")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_complete_checkpoints(results_dir: str) -> List[str]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoints_root(results_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = STEP_DIR.match(name)
        if match and os.path.isfile(os.path.join(root, name, TRAINER_STATE)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def find_resume_checkpoint(results_dir: str, explicit: Optional[str]) -> Optional[str]:
    """The newest complete checkpoint of ``results_dir``; an ``explicit`` one only while this run has no
    newer one of its own (a requeued job must not go back to where it started)."""
    complete = list_complete_checkpoints(results_dir)
    if explicit and complete and _step_of(complete[-1]) > _step_of(explicit):
        return complete[-1]
    if explicit:
        if not os.path.isfile(os.path.join(explicit, TRAINER_STATE)):
            raise CheckpointError(
                f"train.resume_training_checkpoint_path={explicit!r} is not a complete checkpoint folder "
                f"(it must contain {TRAINER_STATE}); use one of {results_dir}/checkpoints/step_* or leave it unset "
                "to resume from the newest one."
            )
        return explicit
    return complete[-1] if complete else None


def _step_of(path: str) -> int:
    match = STEP_DIR.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else -1


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
    barrier: Callable[[], None],
    keep: int,
) -> str:
    """Write checkpoint ``step`` atomically; returns its folder.

    ``write(folder)`` runs on every rank (it may hold collectives) and returns the files that rank wrote;
    they are fsynced before the main rank writes ``trainer_state`` (JSON) and renames the folder.
    """
    root = checkpoints_root(results_dir)
    final = os.path.join(root, step_dir_name(step))
    tmp = os.path.join(root, "." + step_dir_name(step) + ".tmp")
    if os.path.isfile(os.path.join(final, TRAINER_STATE)):
        # Only a run restarted after its last save gets here (nothing trained since): the folder already
        # holds this state, and replacing it would open a window with no complete checkpoint.
        barrier()
        return final
    if is_main:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    barrier()
    for path in write(tmp):  # on disk before trainer_state.json declares the folder complete
        _fsync(path)
    barrier()
    if is_main:
        write_json(os.path.join(tmp, TRAINER_STATE), trainer_state)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)
        for stale in list_complete_checkpoints(results_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
        for name in os.listdir(root):
            if name.startswith(".") and name.endswith(".tmp"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    barrier()
    return final


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
        raise CheckpointError(f"cannot read {file!r}: {exc}") from None


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
