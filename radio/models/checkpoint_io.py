"""The one checkpoint reader: safe file reading, container unwrapping, layout mapping, strict loading.

``read_state_dict`` never runs pickled code: ``.pth``/``.pt`` go through ``torch.load(weights_only=True)``
and ``.safetensors`` through safetensors. ``load_into`` maps a public layout onto the model
(``radio.models.formats``), compares it with the model's own keys and shapes, and either loads it or raises
``CheckpointError`` with the missing / unexpected / wrong-shape keys.
"""

import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from radio.errors import CheckpointError

log = logging.getLogger(__name__)

# Containers a training script may wrap the weights in, most preferred first (EMA weights win).
CONTAINER_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model", "module", "teacher", "student")
# Prefixes added by wrappers (DDP, torch.compile, Lightning, TAO ...), stripped when every key has one.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "student.", "teacher.", "encoder.")
SHOW_KEYS = 5  # keys listed per category in a mismatch report

TRUST_PICKLE_HINT = (
    "If you trust this file, convert it once with `python tools/convert_teacher.py --trust-pickle "
    "<file> <out.safetensors>` and use the .safetensors file."
)


@dataclass
class LoadReport:
    """Outcome of mapping a checkpoint onto a model (keys in the model's naming)."""

    path: str
    fmt: str
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, checkpoint, model)
    dropped: Dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it is not used
    notes: List[str] = field(default_factory=list)
    # model key -> the tensor's shape in the file, for tensors the mapping resampled (position embeddings):
    # a wrong-shape key is reported with what the file holds, not with the resampled shape
    file_shapes: Dict[str, tuple] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Multi-line, human-readable summary (first few keys of each kind, with counts)."""

        def listing(title: str, items: List[str]) -> List[str]:
            if not items:
                return []
            more = f" (+{len(items) - SHOW_KEYS} more)" if len(items) > SHOW_KEYS else ""
            return [f"  {title}: {len(items)}{more}"] + [f"    {i}" for i in items[:SHOW_KEYS]]

        lines = [f"checkpoint {self.path} (layout: {self.fmt})"]
        lines += listing("missing keys (in the model, not in the file)", self.missing)
        lines += listing("unexpected keys (in the file, not in the model)", self.unexpected)
        lines += listing(
            "wrong-shape keys",
            [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched],
        )
        lines += listing("ignored keys", [f"{k} ({why})" for k, why in self.dropped.items()])
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _read_raw(path: str):
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e}); give a readable checkpoint file.") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header. torch.save: a zip archive
    # ("PK\x03\x04") or, in the legacy format, a raw pickle (0x80 protocol byte).
    header_length = int.from_bytes(head[:8], "little")
    is_safetensors = head[8:9] == b"{" and 8 + header_length <= size
    if not is_safetensors and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):
        if path.endswith(".safetensors"):
            # torch.load would hand a .safetensors name to safetensors, whatever the file holds.
            raise CheckpointError(
                f"{path}: named .safetensors but holds a torch.save file; rename it to .pt (it is then read with "
                "torch.load(weights_only=True)) or convert it with tools/convert_teacher.py."
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=head[:4] == b"PK\x03\x04")
        except pickle.UnpicklingError as e:
            if "GLOBAL" not in str(e):  # not a refused Python object: the pickle stream itself is broken
                raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint (not a valid pickle)") from None
            raise CheckpointError(
                f"{path}: refusing to unpickle Python objects (torch.load weights_only=True rejected it: "
                f"{_refused_global(e)}). {TRUST_PICKLE_HINT}"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(
                f"{path}: truncated or corrupt PyTorch checkpoint ({type(e).__name__}: {e})"
            ) from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint; expected a .safetensors file or a torch.save file, and "
            f"safetensors reports: {e} (truncated or corrupt?)"
        ) from None


def _refused_global(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
    return lines[0] if lines else str(error).splitlines()[0]


def unwrap_state_dict(obj, path: str) -> Dict[str, torch.Tensor]:
    """A loaded checkpoint object -> flat tensor dict.

    Training containers (``state_dict_ema``, ``state_dict``, ``model``, ...) are unwrapped, EMA first, and
    wrapper prefixes shared by every key (``module.``, ``_orig_mod.``, ...) are stripped.
    """
    while not _is_tensor_dict(obj):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(
                f"{path}: no state_dict found (top-level entries: {keys}); expected a mapping of tensor names "
                f"to tensors, optionally under one of {list(CONTAINER_KEYS)}"
            )
        obj = inner
    state_dict = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                stripped = True
    return state_dict


def _read_sharded(index_path: str) -> Dict[str, torch.Tensor]:
    """HF sharded checkpoint: ``*.index.json`` whose ``weight_map`` names the shard of every tensor."""
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a sharded-checkpoint index ({e})") from None
    state: Dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(os.path.dirname(index_path), shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{index_path}: shard {shard} not found next to the index")
        state.update(_read_raw(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} indexed tensors are in no shard, e.g. {missing[:5]}")
    return state


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read ``path`` into a flat tensor dict: .safetensors, .pth/.pt/.bin (weights_only torch.load), or the
    ``*.index.json`` of a sharded HF checkpoint."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.endswith(".index.json"):
        return unwrap_state_dict(_read_sharded(path), path)
    return unwrap_state_dict(_read_raw(path), path)


def compare(state_dict: Dict[str, torch.Tensor], model: nn.Module, report: LoadReport) -> None:
    """Fill ``report`` with the keys/shapes in which ``state_dict`` and ``model`` disagree."""
    compare_shapes(
        {k: tuple(v.shape) for k, v in state_dict.items()},
        {k: tuple(v.shape) for k, v in model.state_dict().items()},
        report,
    )


def compare_shapes(found: Dict[str, tuple], expected: Dict[str, tuple], report: LoadReport) -> None:
    """``compare`` on key -> shape maps (for models whose tensors are sharded across ranks)."""
    report.missing = [k for k in expected if k not in found]
    report.unexpected = [k for k in found if k not in expected]
    report.mismatched = [
        (k, report.file_shapes.get(k, v), expected[k]) for k, v in found.items() if k in expected and v != expected[k]
    ]


def load_exact(module: nn.Module, state: Dict[str, torch.Tensor], path: str, what: str, hint: str) -> None:
    """Load a state dict that must match ``module`` key for key and shape for shape (our own files:
    checkpoints, normaliser state); otherwise ``CheckpointError`` with the report and ``hint``."""
    report = LoadReport(path=path, fmt=what)
    compare(state, module, report)
    if not report.ok:
        raise CheckpointError(f"{report.describe()}\n{hint}")
    module.load_state_dict(state, strict=True)


def load_into(
    model: nn.Module, path: str, *, strict: bool = True, role: str = "teacher", source_split: Tuple[int, int] = (4, 4)
) -> LoadReport:
    """Load the checkpoint at ``path`` into ``model`` (any supported public layout).

    ``role``: 'teacher' keeps C-RADIO adaptor heads and PHI-S normaliser; 'student' drops them and adapts
    C-RADIO's CLS-slot rows (checkpoint split ``source_split`` = (CLS, registers)) and position grid to
    the student's shape. Strict: any missing, unexpected or
    wrong-shape key raises ``CheckpointError`` listing them; otherwise the matching tensors are loaded and
    the report is logged as a warning. A model built on the meta device receives the tensors by assignment.
    """
    from radio.models.formats import to_model_layout

    state_dict = read_state_dict(path)
    mapped, report = to_model_layout(state_dict, model, path=path, role=role, source_split=source_split)
    compare(mapped, model, report)
    if not report.ok and strict:
        err = CheckpointError(
            f"{report.describe()}\nThe checkpoint does not match the model (wrong architecture or size?). "
            "Check the backbone type, or set strict_loading: false to load the matching tensors only."
        )
        err.report = report  # the full key lists, for callers that want more than the first few
        raise err
    if not report.ok:
        log.warning("loading non-strictly:\n%s", report.describe())
    else:
        log.info("%s", report.describe())
    bad = {k for k, _, _ in report.mismatched}
    assign = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict({k: v for k, v in mapped.items() if k not in bad}, strict=False, assign=assign)
    return report
