"""Atomic training checkpoints and their discovery.

Layout of ``results_dir/checkpoints/step_XXXXXXX/``:
- ``model.safetensors``: the trained module (student + heads), unwrapped.
- ``normalizers.safetensors``: PHI-S / standardisation statistics and loss running state.
- ``optimizer.pt``: optimizer state (tensors and plain Python values only; read with ``weights_only=True``).
- ``rng_rank{R}.pt``, ``loader_rank{R}.json``: per-rank RNG and data-loader state.
- ``trainer_state.json``: step counters and the LR scheduler; written last.

Every rank writes (and fsyncs) into ``.step_XXXXXXX.tmp``; the main rank adds ``trainer_state.json`` last
and renames the folder, so a ``step_*`` folder is complete by construction; a kill at any moment leaves
at worst a stale temp folder, which the next save removes.
"""

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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


def _state_to_cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # safetensors refuses shared storage; contiguous clones are cheap next to the write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


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


@dataclass
class CheckpointPayload:
    """What one rank contributes to a checkpoint."""

    model_state: Dict[str, torch.Tensor]
    normalizer_state: Dict[str, torch.Tensor]
    optimizer_state: dict
    trainer_state: dict  # JSON-serialisable: counters + scheduler state
    loader_state: dict
    rng: Optional[dict] = None  # filled on load; the caller restores it once everything is built


def save_checkpoint(
    results_dir: str,
    step: int,
    payload: CheckpointPayload,
    *,
    rank: int,
    is_main: bool,
    barrier: Callable[[], None],
    keep: int,
) -> str:
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
    written = [os.path.join(tmp, f"rng_rank{rank}.pt"), os.path.join(tmp, f"loader_rank{rank}.json")]
    torch.save(rng_state(), written[0])
    _write_json(written[1], payload.loader_state)
    if is_main:
        written += [os.path.join(tmp, name) for name in (MODEL_FILE, NORMALIZERS_FILE, OPTIMIZER_FILE)]
        save_file(_state_to_cpu(payload.model_state), written[2])
        save_file(_state_to_cpu(payload.normalizer_state), written[3])
        torch.save(payload.optimizer_state, written[4])
    for path in written:  # on disk before trainer_state.json declares the folder complete
        _fsync(path)
    barrier()
    if is_main:
        _write_json(os.path.join(tmp, TRAINER_STATE), payload.trainer_state)
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


def load_checkpoint(path: str, rank: int) -> CheckpointPayload:
    """Read a checkpoint folder; raises ``CheckpointError`` naming the file on any problem."""

    def read(name: str, reader):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(
                f"checkpoint {path!r} is missing {name}; it was not written by this version or is damaged."
            )
        try:
            return reader(file)
        except Exception as exc:  # corrupt file: say which one
            raise CheckpointError(f"cannot read {file!r}: {exc}") from None

    rng_file = f"rng_rank{rank}.pt"
    if not os.path.isfile(os.path.join(path, rng_file)):
        raise CheckpointError(
            f"checkpoint {path!r} has no state for rank {rank} ({rng_file}); resume with the same number of processes "
            "it was written with."
        )
    payload = CheckpointPayload(
        model_state=read(MODEL_FILE, load_file),
        normalizer_state=read(NORMALIZERS_FILE, load_file),
        optimizer_state=read(OPTIMIZER_FILE, lambda f: torch.load(f, map_location="cpu", weights_only=True)),
        trainer_state=read(TRAINER_STATE, _read_json),
        loader_state=read(f"loader_rank{rank}.json", _read_json),
        rng=read(rng_file, lambda f: torch.load(f, map_location="cpu", weights_only=True)),
    )
    return payload


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _fsync(path: str) -> None:
    """Flush a file's or a folder's (its entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
