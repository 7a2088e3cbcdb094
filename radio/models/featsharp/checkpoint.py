"""Reading FeatSharp checkpoints (NVlabs/FeatSharp ``train.py`` layout) strictly into a ``FeatSharpAdaptor``.

A checkpoint is a ``torch.save`` dict: ``model_state`` (the trainer's state dict: ``upsampler.*``,
``normalizer.*``, ``bias_buffer.*``, optional ``cond_bias_transform.*``, plus trainer-only modules that are
ignored) and ``upsample_args`` = {type, factor, normalizer}. It is read with ``torch.load(weights_only=True)``,
never unpickling code. A ``.safetensors`` file with the flat ``model_state`` tensors and ``upsample_args`` as
JSON metadata is accepted too. Spectral reparametrisation (``<linear>.parametrizations.weight.*``) is folded
into plain weights exactly as FeatSharp's loader does (one power iteration from the stored u, v).
"""

import functools
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from radio.errors import CheckpointError
from radio.models.checkpoint_io import LoadReport, compare
from radio.models.featsharp.adaptor import NORMALIZERS, BiasBuffer, FeatSharpAdaptor, PhiStandardize
from radio.models.featsharp.attention import NUM_HEADS
from radio.models.featsharp.upsampler import DEFAULT_INPUTS, DEFAULT_WINDOW, INPUTS, FeatSharpUpsampler

StateDict = Dict[str, torch.Tensor]

GROUPS = ("upsampler", "normalizer", "bias_buffer", "cond_bias_transform")
SN = ".parametrizations.weight."
SN_EPS, SN_ALPHA = 1e-6, 0.05  # FeatSharp's spectral reparametrisation constants (not stored)
SUPPORTED = (
    "upsampler type 'featsharp' or 'featsharp.<flags>' with flags no-ln, no-proj (no effect), wnd-<N>, "
    f"inputs-<a>-<b>... from {list(INPUTS)}; normalizer one of {list(NORMALIZERS)}"
)
RESAVE_HINT = (
    "Re-save it in a trusted environment as plain tensors and dicts, e.g. chk = torch.load(path, "
    "weights_only=False); torch.save({'model_state': chk['model_state'], 'upsample_args': "
    "dict(chk['upsample_args'])}, 'featsharp_clean.pth')."
)


@dataclass(frozen=True)
class UpsamplerSpec:
    """What ``upsample_args`` asks for."""

    factor: int
    normalizer: str
    inputs: Tuple[str, ...] = DEFAULT_INPUTS
    window: int = DEFAULT_WINDOW
    layer_norm: bool = True


def parse_upsample_args(args: dict, path: str, do_upsample: bool = True) -> UpsamplerSpec:
    """``upsample_args`` {type, factor, normalizer} -> ``UpsamplerSpec``; ``CheckpointError`` for unsupported
    variants. With ``do_upsample`` False the upsampler type is not used (FeatSharp's loader ignores it too)."""
    normalizer = args.get("normalizer") or "none"
    if normalizer not in NORMALIZERS:
        raise CheckpointError(f"{path}: unsupported FeatSharp normalizer {normalizer!r}; supported: {SUPPORTED}")
    if not do_upsample:
        return UpsamplerSpec(factor=1, normalizer=normalizer)
    kind, factor = str(args.get("type")), args.get("factor")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise CheckpointError(f"{path}: upsample_args.factor must be a positive integer, got {factor!r}")
    name, *flags = kind.split(".")
    inputs, window, layer_norm = DEFAULT_INPUTS, DEFAULT_WINDOW, True
    bad = [] if name == "featsharp" else [name]
    for flag in flags:
        if flag == "no-ln":
            layer_norm = False
        elif flag == "no-proj":
            continue  # accepted by FeatSharp and ignored by its AttentionLevel
        elif flag.startswith("wnd-") and flag[4:].isdigit() and int(flag[4:]) > 0:
            window = int(flag[4:])
        elif flag.startswith("inputs-") and all(i in INPUTS for i in flag.split("-")[1:]):
            inputs = tuple(flag.split("-")[1:])
        else:
            bad.append(flag)
    if bad:
        raise CheckpointError(
            f"{path}: unsupported FeatSharp upsampler {kind!r} ({', '.join(bad)}); supported: {SUPPORTED}"
        )
    return UpsamplerSpec(factor, normalizer, inputs, window, layer_norm)


def read_featsharp_file(path: str) -> Tuple[StateDict, dict, str]:
    """path -> (model_state, upsample_args, format name), without running pickled code."""
    if not os.path.isfile(path):
        raise CheckpointError(f"FeatSharp checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from None
        if "upsample_args" not in meta:
            raise CheckpointError(
                f"{path}: a FeatSharp .safetensors file needs metadata 'upsample_args' (JSON with type, factor, "
                f"normalizer); found metadata keys {sorted(meta)}"
            )
        try:
            return state, json.loads(meta["upsample_args"]), "featsharp (safetensors)"
        except ValueError as e:
            raise CheckpointError(f"{path}: metadata 'upsample_args' is not valid JSON ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e) and "weights_only" not in str(e).lower():
            raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint (not a valid pickle)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refusing to unpickle Python objects (torch.load weights_only=True rejected it: {first}). "
            f"{RESAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state"), dict):
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not a FeatSharp checkpoint (expected a dict with 'model_state' and 'upsample_args'; found {keys})"
        )
    if not isinstance(obj.get("upsample_args"), dict):
        raise CheckpointError(
            f"{path}: FeatSharp checkpoint without an 'upsample_args' dict (type, factor, normalizer)"
        )
    return obj["model_state"], obj["upsample_args"], "featsharp"


def split_groups(model_state: StateDict, report: LoadReport) -> Dict[str, StateDict]:
    """model_state -> {group: state dict without the group prefix nor a DDP ``module.``}; other keys are
    recorded in ``report.dropped``."""
    groups: Dict[str, StateDict] = {g: {} for g in GROUPS}
    for key, value in model_state.items():
        group, _, rest = key.partition(".")
        if group not in groups or not isinstance(value, torch.Tensor):
            report.dropped[key] = "FeatSharp trainer state, not part of the upsampler"
            continue
        groups[group][rest[len("module.") :] if rest.startswith("module.") else rest] = value
    return groups


def _sigma(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """torch's ``_SpectralNorm`` in training mode: one power iteration from (u, v), then σ = u·(W v) + eps."""
    u = F.normalize(torch.mv(weight, v), dim=0, eps=SN_EPS)
    v = F.normalize(torch.mv(weight.t(), u), dim=0, eps=SN_EPS)
    return torch.dot(u, torch.mv(weight, v)) + SN_EPS


def spectral_weight(original: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sn_scale: torch.Tensor, version: int):
    """W = original · s / σ with s = softplus(sn_scale) + 0.05 (version 2) or sn_scale (version 1)."""
    # Fresh float32 copies: the same file gives the same weights whatever the storage (mmap, safetensors).
    w, u, v, sn_scale = (t.to(torch.float32, copy=True) for t in (original, u, v, sn_scale))
    scale = sn_scale if version == 1 else F.softplus(sn_scale) + SN_ALPHA
    return w * (scale / _sigma(w, u, v))


def _chunks(name: str) -> int:
    """FeatSharp reparametrises a qkv projection per third and a SwiGLU ``w12`` per half."""
    return 3 if name.endswith("attn.qkv") else 2 if name.endswith("mlp.w12") else 1


def fold_spectral(sd: StateDict, module: nn.Module, group: str, path: str, issues: LoadReport) -> StateDict:
    """A group's state dict with ``<linear>.parametrizations.weight.*`` keys -> plain ``<linear>.weight``.

    FeatSharp reparametrises every ``nn.Linear`` of a module whose state has any ``_sn_version`` key; such a
    module's linears must all come reparametrised. Missing / unexpected / wrong-shape reparametrisation keys
    are added to ``issues`` (keys named with the group prefix).
    """
    if not any(k.endswith("_sn_version") for k in sd):
        return dict(sd)
    out = {k: v for k, v in sd.items() if SN not in k}
    used = set()
    for name, lin in module.named_modules():
        if not isinstance(lin, nn.Linear):
            continue
        base = f"{name}{SN}"
        if f"{name}.weight" in out:
            issues.unexpected.append(f"{group}.{name}.weight (plain weight in a spectral-reparametrised module)")
            del out[f"{name}.weight"]
        if base + "original" not in sd:
            issues.missing.append(f"{group}.{base}original")
            continue
        original = sd[base + "original"]
        used.add(base + "original")
        n = _chunks(name)
        prefixes = [f"{base}0."] if n == 1 else [f"{base}0.parts.{i}." for i in range(n)]
        if original.ndim != 2 or original.shape[0] % n:
            issues.mismatched.append((f"{group}.{base}original", tuple(original.shape), tuple(lin.weight.shape)))
            continue
        parts = []
        for pre, part in zip(prefixes, original.chunk(n)):
            need = {"_u": (part.shape[0],), "_v": (part.shape[1],), "sn_scale": (1, 1)}
            for key, shape in need.items():
                t = sd.get(pre + key)
                if t is None:
                    issues.missing.append(f"{group}.{pre}{key}")
                elif t.numel() != torch.Size(shape).numel():
                    issues.mismatched.append((f"{group}.{pre}{key}", tuple(t.shape), shape))
            used.update(pre + k for k in (*need, "_sn_version"))
            version = sd.get(pre + "_sn_version")
            if version is not None and int(version) != 2:
                raise CheckpointError(
                    f"{path}: {group}.{pre}_sn_version is {int(version)}; FeatSharp's loader applies the "
                    "version-2 formula to any stored version, so only version 2 is accepted"
                )
            if all(pre + k in sd for k in need):
                version = 1 if version is None else 2
                u, v, s = (sd[pre + k].reshape(-1) for k in need)
                if u.numel() == part.shape[0] and v.numel() == part.shape[1] and s.numel() == 1:
                    parts.append(spectral_weight(part, u, v, s, version))
        if len(parts) == n:
            out[f"{name}.weight"] = torch.cat(parts).to(original.dtype)
    issues.unexpected += [f"{group}.{k}" for k in sd if SN in k and k not in used]
    return out


def _check_teacher(groups: Dict[str, StateDict], path: str, embed_dim: int, grid: int) -> None:
    """Refuse a checkpoint trained for another channel width or low-res grid."""
    width_keys = (
        ("bias_buffer", "buffer", 1),
        ("normalizer", "mean", 0),
        ("upsampler", "ups.0.tile_pos", 1),
        ("upsampler", "ups.0.block.ls2.gamma", 0),
    )
    for group, key, dim in width_keys:
        t = groups[group].get(key)
        if t is not None and t.ndim > dim and t.shape[dim] != embed_dim:
            raise CheckpointError(
                f"{path}: FeatSharp checkpoint is for {t.shape[dim]}-channel features ({group}.{key} "
                f"{list(t.shape)}) but the teacher has embed_dim {embed_dim}"
            )
    buffer = groups["bias_buffer"].get("buffer")
    if buffer is not None and buffer.ndim == 4 and tuple(buffer.shape[-2:]) != (grid, grid):
        raise CheckpointError(
            f"{path}: FeatSharp checkpoint is for a {buffer.shape[-2]}x{buffer.shape[-1]} low-res grid "
            f"(bias_buffer.buffer {list(buffer.shape)}) but the teacher gives {grid}x{grid} "
            "(input_size / patch_size)"
        )


def check_featsharp_file(path: str, *, embed_dim: int, patch_size: int, input_size: int, do_upsample: bool) -> int:
    """The checks a run makes before building anything: the file reads, its ``upsample_args`` name a supported
    variant, and it was trained for this teacher's width and grid. Returns the upsample factor (1 without
    ``do_upsample``); ``CheckpointError`` otherwise. The spec check and the view plan both ask, so the answer
    is kept per file version (path, size, mtime): the file is read once."""
    stat = os.stat(path) if os.path.isfile(path) else None
    version = (stat.st_size, stat.st_mtime_ns) if stat else None
    return _checked_factor(path, version, embed_dim, patch_size, input_size, do_upsample)


@functools.lru_cache(maxsize=16)
def _checked_factor(path: str, version, embed_dim: int, patch_size: int, input_size: int, do_upsample: bool) -> int:
    model_state, upsample_args, _ = read_featsharp_file(path)
    spec = parse_upsample_args(upsample_args, path, do_upsample)
    _check_teacher(
        split_groups(model_state, LoadReport(path=path, fmt="featsharp")), path, embed_dim, input_size // patch_size
    )
    return spec.factor


def build_adaptor(
    spec: UpsamplerSpec,
    *,
    embed_dim: int,
    patch_size: int,
    input_size: int,
    bias: bool,
    cond_bias: bool,
    upsample: bool,
) -> FeatSharpAdaptor:
    grid = input_size // patch_size
    upsampler = None
    if upsample:
        upsampler = FeatSharpUpsampler(embed_dim, grid, spec.factor, spec.inputs, spec.window, spec.layer_norm)
    return FeatSharpAdaptor(
        embed_dim=embed_dim,
        input_size=input_size,
        patch_size=patch_size,
        normalizer=PhiStandardize(embed_dim, spec.normalizer),
        bias_buffer=BiasBuffer(embed_dim, grid) if bias else None,
        cond_bias=Block(embed_dim, num_heads=NUM_HEADS, init_values=1e-8) if cond_bias else None,
        upsampler=upsampler,
    )


def load_featsharp(
    path: str, *, embed_dim: int, patch_size: int, input_size: int, do_upsample: bool = True
) -> Tuple[FeatSharpAdaptor, LoadReport]:
    """Load a FeatSharp checkpoint for a teacher of width ``embed_dim`` at ``input_size`` px, patch ``patch_size``.

    Strict: every tensor of the adaptor must be in the file with its shape, and no unexpected
    ``upsampler.`` / ``normalizer.`` / ``bias_buffer.`` / ``cond_bias_transform.`` key may remain; otherwise
    ``CheckpointError`` (with ``.report``). ``do_upsample`` False: the teacher at its own grid with the
    normaliser and bias map (FeatSharp's ``load_from_file(do_upsample=False)``). Returns the frozen adaptor
    (eval, no gradients, float32) and the ``LoadReport``.
    """
    if input_size % patch_size:
        raise CheckpointError(f"{path}: input_size {input_size} is not a multiple of patch_size {patch_size}")
    model_state, upsample_args, fmt = read_featsharp_file(path)
    spec = parse_upsample_args(upsample_args, path, do_upsample)
    report = LoadReport(path=path, fmt=fmt)
    groups = split_groups(model_state, report)
    _check_teacher(groups, path, embed_dim, input_size // patch_size)
    if do_upsample and (embed_dim * len(spec.inputs)) % NUM_HEADS:
        raise CheckpointError(
            f"{path}: FeatSharp's refine block needs a width divisible by {NUM_HEADS}; "
            f"{embed_dim} x {len(spec.inputs)} inputs is not"
        )
    if groups["cond_bias_transform"] and embed_dim % NUM_HEADS:
        raise CheckpointError(f"{path}: the conditional-bias block needs embed_dim divisible by {NUM_HEADS}")
    if not do_upsample:
        for key in groups["upsampler"]:
            report.dropped[f"upsampler.{key}"] = "upsampler weights, unused with do_upsample=False"
        groups["upsampler"] = {}
    adaptor = build_adaptor(
        spec,
        embed_dim=embed_dim,
        patch_size=patch_size,
        input_size=input_size,
        bias=bool(groups["bias_buffer"]),
        cond_bias=bool(groups["cond_bias_transform"]),
        upsample=do_upsample,
    )
    issues = LoadReport(path=path, fmt=fmt)
    state: StateDict = {}
    for group in GROUPS:
        module = getattr(adaptor, group)
        sd = groups[group]
        if module is not None:
            sd = fold_spectral(sd, module, group, path, issues)
        state.update({f"{group}.{k}": v for k, v in sd.items()})
    compare(state, adaptor, report)
    report.missing += issues.missing
    report.unexpected += issues.unexpected
    report.mismatched += issues.mismatched
    if not report.ok:
        err = CheckpointError(
            f"{report.describe()}\nThe FeatSharp checkpoint does not match the upsampler its upsample_args "
            f"describe ({upsample_args.get('type')!r}, factor {upsample_args.get('factor')!r}) for a "
            f"{embed_dim}-channel teacher."
        )
        err.report = report
        raise err
    if any(SN in k for k in model_state):
        report.notes.append("spectral reparametrisation folded into plain weights")
    adaptor.load_state_dict(state, strict=True)
    adaptor.eval().requires_grad_(False)
    return adaptor, report
