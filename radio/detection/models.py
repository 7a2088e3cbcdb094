"""Detectors of the ``task: detection`` spec: transformers DETR-family models on timm backbones.

``build_detector`` makes a randomly initialised detector from a ``DetectorConfig`` (``radio/detection/schema.py``),
optionally with timm weights for its backbone; ``load_detector`` loads a trained teacher (a ``save_pretrained``
folder or a ``.safetensors`` state dict) strictly; ``copy_teacher_enc_dec`` starts a student from its teacher's
encoder, decoder and heads (``model.load_teacher_enc_dec``); ``export_detector`` writes the folder that
``transformers.AutoModelForObjectDetection.from_pretrained`` reloads.

Where the timm backbone sits in each family (its tensors are everything under ``model.backbone.``):
RT-DETR, RT-DETRv2 and D-FINE wrap it in a ``TimmBackbone`` (``model.backbone.model._backbone``); Deformable DETR
unwraps it (``model.backbone.model``).
"""

import contextlib
import difflib
import inspect
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import timm
import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from torch import nn

from radio.detection.schema import DetectorConfig
from radio.errors import CheckpointError, SpecError
from radio.models.checkpoint_io import LoadReport, compare, read_state_dict

# transformers' detector imports load torchao (installed for teacher FP8), whose enums make torch's pytree
# registry warn on every start; the warning is about torchao's code, not the run.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

# spec family -> (transformers config class, detector class)
DETECTOR_FAMILIES = {
    "rtdetr": (transformers.RTDetrConfig, transformers.RTDetrForObjectDetection),
    "rtdetr_v2": (transformers.RTDetrV2Config, transformers.RTDetrV2ForObjectDetection),
    "d_fine": (transformers.DFineConfig, transformers.DFineForObjectDetection),
    "deformable_detr": (transformers.DeformableDetrConfig, transformers.DeformableDetrForObjectDetection),
}
BACKBONE_PREFIX = "model.backbone."  # every family's backbone tensors (the timm model and its frozen norms)
SHOW_NAMES = 5  # tensor names listed per kind in an error or a report


def _family(cfg: DetectorConfig, where: str):
    if cfg.family not in DETECTOR_FAMILIES:
        close = difflib.get_close_matches(str(cfg.family), list(DETECTOR_FAMILIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"{where}.family: unknown detector {cfg.family!r}{hint}; known: {', '.join(DETECTOR_FAMILIES)}")
    return DETECTOR_FAMILIES[cfg.family]


def _plain(value):
    """An OmegaConf container as plain Python (transformers configs serialise to JSON)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _backbone_levels(cfg: DetectorConfig, where: str):
    """The timm backbone's ``feature_info`` for ``cfg.out_indices`` (a random-weight build, nothing downloaded)."""
    if not timm.is_model(cfg.backbone):
        close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close timm names: {', '.join(close)}" if close else "; timm.list_models() lists the known names"
        raise SpecError(f"{where}.backbone: {cfg.backbone!r} is not a timm model{hint}")
    out_indices = [int(i) for i in cfg.out_indices]
    try:
        features = timm.create_model(cfg.backbone, features_only=True, out_indices=out_indices, pretrained=False)
    except (AssertionError, IndexError, ValueError) as e:
        raise SpecError(
            f"{where}.out_indices: {out_indices} are not feature levels of timm's {cfg.backbone} ({str(e) or type(e).__name__}); "
            "give indices of its stages, e.g. [1, 2, 3] for the strides 8, 16, 32 of a 4-stage network"
        ) from None
    return features.feature_info, out_indices


def _family_fields(cfg: DetectorConfig, channels: List[int], strides: List[int]) -> Dict[str, object]:
    """The config fields a ``DetectorConfig`` sets, in the family's own names."""
    levels = len(channels)
    shared = dict(
        num_queries=cfg.num_queries,
        d_model=cfg.hidden_dim,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        encoder_attention_heads=cfg.attention_heads,
        decoder_attention_heads=cfg.attention_heads,
        num_feature_levels=levels,
    )
    if cfg.family == "deformable_detr":
        # The input projections take their widths from the backbone itself; box refinement and the auxiliary
        # decoder losses are how Deformable DETR is trained (single stage unless overridden).
        return dict(
            shared, with_box_refine=True, two_stage=False, two_stage_num_proposals=cfg.num_queries, auxiliary_loss=True
        )
    fields = dict(
        shared,
        encoder_in_channels=channels,
        feat_strides=strides,
        encoder_hidden_dim=cfg.hidden_dim,
        decoder_in_channels=[cfg.hidden_dim] * levels,
        encode_proj_layers=[levels - 1],  # the attention layer (AIFI) runs on the coarsest level
        num_denoising=cfg.num_denoising,
        # Frozen norm statistics only mean something for pretrained weights: a random backbone trains its norms.
        freeze_backbone_batch_norms=bool(cfg.pretrained_backbone_path),
    )
    if cfg.family == "rtdetr_v2":
        fields["decoder_n_levels"] = levels
    return fields


def _config_field_names(config_class) -> List[str]:
    return [name for name in inspect.signature(config_class.__init__).parameters if name not in ("self", "kwargs")]


def detector_config(cfg: DetectorConfig, num_classes: int, *, where: str = "model") -> transformers.PreTrainedConfig:
    """The transformers config of ``cfg``'s detector for ``num_classes`` classes.

    The per-level input widths and strides come from the timm backbone's ``feature_info``; ``cfg.config_overrides``
    (any field of the family's config) are applied last. ``where`` is the spec section named in errors
    (``model`` or ``distill.teacher``).
    """
    config_class, _ = _family(cfg, where)
    feature_info, out_indices = _backbone_levels(cfg, where)
    fields = _family_fields(cfg, list(feature_info.channels()), list(feature_info.reduction()))
    overrides = {str(k): _plain(v) for k, v in _plain(cfg.config_overrides).items()}
    known = _config_field_names(config_class)
    for name in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; close fields: {', '.join(close)}" if close else ""
            raise SpecError(
                f"{where}.config_overrides.{name}: not a field of transformers' {config_class.__name__}{hint}"
            )
    backbone_config = transformers.TimmBackboneConfig(backbone=cfg.backbone, out_indices=out_indices)
    try:
        return config_class(backbone_config=backbone_config, num_labels=num_classes, **{**fields, **overrides})
    except (StrictDataclassError, ValueError, TypeError) as e:  # transformers validates its config fields
        reason = " ".join(str(e).split())
        raise SpecError(
            f"{where}.config_overrides {overrides}: transformers' {config_class.__name__} refuses them: {reason}"
        ) from None


def timm_backbone(model: nn.Module) -> nn.Module:
    """The timm feature network inside ``model`` (see the module docstring for where each family keeps it)."""
    wrapper = model.model.backbone.model
    return getattr(wrapper, "_backbone", wrapper)


def _timm_features_from_file(cfg: DetectorConfig, path: str, where: str) -> Dict[str, torch.Tensor]:
    """The backbone's feature-network state dict from a timm state dict of the whole ``cfg.backbone`` model.

    The file must match ``timm.create_model(cfg.backbone)`` key for key and shape for shape, its classifier
    aside (a feature network has none, so a file with another class count or none is accepted too); timm itself
    then maps it onto the feature network, as it does for its own pretrained weights.
    """
    try:
        state = read_state_dict(path)
    except CheckpointError as e:
        raise CheckpointError(f"{where}.pretrained_backbone_path: {e}") from None
    whole = timm.create_model(cfg.backbone, pretrained=False)
    report = LoadReport(path=path, fmt=f"timm {cfg.backbone}")
    compare(state, whole, report)
    classifier = whole.pretrained_cfg.get("classifier") or ()
    in_classifier = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    report.missing = [k for k in report.missing if not k.startswith(in_classifier)]
    report.mismatched = [m for m in report.mismatched if not m[0].startswith(in_classifier)]  # any class count
    if not report.ok:
        raise CheckpointError(
            f"{where}.pretrained_backbone_path: {report.describe()}\n"
            f"expected a state dict of timm.create_model({cfg.backbone!r}) (.safetensors)"
        )
    features = timm.create_model(
        cfg.backbone,
        features_only=True,
        out_indices=[int(i) for i in cfg.out_indices],
        pretrained=True,
        pretrained_cfg_overlay={"state_dict": state},
    )
    return features.state_dict()


def load_backbone_weights(model: nn.Module, cfg: DetectorConfig, path: str, *, where: str = "model") -> None:
    """Load the timm weights at ``path`` into ``model``'s backbone, strictly (``CheckpointError`` naming the file
    and the keys otherwise). The detector's frozen batch norms keep no ``num_batches_tracked`` counter."""
    state = _timm_features_from_file(cfg, path, where)
    backbone = timm_backbone(model)
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    report = LoadReport(path=path, fmt=f"timm {cfg.backbone} features")
    compare(state, backbone, report)
    if not report.ok:
        raise CheckpointError(f"{where}.pretrained_backbone_path: {report.describe()}")
    backbone.load_state_dict(state, strict=True)


def build_detector(cfg: DetectorConfig, num_classes: int, *, where: str = "model") -> transformers.PreTrainedModel:
    """A randomly initialised detector (torch's default generator: the caller seeds), with the timm weights of
    ``cfg.pretrained_backbone_path`` in its backbone when one is given."""
    _, detector_class = _family(cfg, where)
    model = detector_class(detector_config(cfg, num_classes, where=where))
    if cfg.pretrained_backbone_path:
        load_backbone_weights(model, cfg, cfg.pretrained_backbone_path, where=where)
    else:
        _revive_frozen_zero_scales(model)
    return model


def _revive_frozen_zero_scales(model: nn.Module) -> None:
    """A random backbone's frozen norms with a zero scale set to one. timm zero-initialises the last norm of each
    residual block (``zero_init_last``) for the norm to learn its way up; frozen (Deformable DETR always freezes
    them), the block would stay switched off for the whole run."""
    with torch.no_grad():
        for module in timm_backbone(model).modules():
            weight = getattr(module, "weight", None)
            frozen = "Frozen" in type(module).__name__
            if frozen and isinstance(weight, torch.Tensor) and weight.dim() == 1 and not weight.any():
                weight.fill_(1.0)


def _names(items: Sequence[str]) -> str:
    items = sorted(str(i) for i in items)
    more = f" (+{len(items) - SHOW_NAMES} more)" if len(items) > SHOW_NAMES else ""
    return ", ".join(items[:SHOW_NAMES]) + more


def _load_folder(cfg: DetectorConfig, num_classes: int, path: str, where: str) -> transformers.PreTrainedModel:
    config_class, detector_class = _family(cfg, where)
    config_file = os.path.join(path, "config.json")
    try:
        with open(config_file) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{where}: {config_file} cannot be read as a transformers config ({e})") from None
    if saved.get("model_type") != config_class.model_type:
        raise CheckpointError(
            f"{where}: {path} holds a {saved.get('model_type')!r} model, not the spec's {config_class.model_type!r} "
            f"(family {cfg.family!r}); set the family the folder was trained as"
        )
    saved_classes = len(saved.get("id2label") or {}) or saved.get("num_labels")
    if saved_classes != num_classes:
        raise CheckpointError(
            f"{where}: {path} detects {saved_classes} classes but dataset.num_classes is {num_classes}"
        )
    _check_folder_matches_section(cfg, num_classes, saved, path, where)
    with _quiet_progress():
        model, info = detector_class.from_pretrained(
            path, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True, dtype=torch.float32
        )
    problems = [
        f"{kind}: {_names(keys)}"
        for kind, keys in (
            ("missing", info["missing_keys"]),
            ("unexpected", info["unexpected_keys"]),
            ("wrong shape", [entry[0] if isinstance(entry, tuple) else entry for entry in info["mismatched_keys"]]),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{where}: {path} does not match its own config.json ({'; '.join(problems)})")
    return model


# config.json field -> the DetectorConfig field it comes from (``_family_fields``), checked against a teacher folder
_SECTION_FIELDS = {
    "d_model": "hidden_dim",
    "num_queries": "num_queries",
    "encoder_layers": "encoder_layers",
    "decoder_layers": "decoder_layers",
    "encoder_ffn_dim": "ffn_dim",
    "decoder_attention_heads": "attention_heads",
    "num_denoising": "num_denoising",
}


def _check_folder_matches_section(cfg: DetectorConfig, num_classes: int, saved: dict, path: str, where: str) -> None:
    """The folder's config.json defines the teacher that runs; a spec section that says otherwise would be
    recorded in config.yaml and read by every check (query counts for ``matching: index``) while another model
    runs. Refused, listing the differences."""
    expected = detector_config(cfg, num_classes, where=where.rsplit(".", 1)[0] + ".teacher").to_dict()
    differences = [
        f"{field}={saved[key]!r} (the section says {getattr(cfg, field)!r})"
        for key, field in _SECTION_FIELDS.items()
        if key in saved and key in expected and saved[key] != expected[key]
    ]
    saved_backbone = (saved.get("backbone_config") or {}).get("backbone")
    if saved_backbone is not None and saved_backbone != cfg.backbone:
        differences.insert(0, f"backbone={saved_backbone!r} (the section says {cfg.backbone!r})")
    if differences:
        raise CheckpointError(
            f"{where}: {path} holds a detector with {', '.join(differences)}; make distill.teacher describe the "
            "folder (its config.json), or point at the folder the section describes"
        )


def _with_tied_aliases(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state`` with every tied tensor of ``model`` under all its names: ``safetensors.torch.save_model`` keeps
    one name per shared storage (Deformable DETR's box heads are the decoder's), ``model.state_dict()`` has all."""
    names_by_storage: Dict[int, List[str]] = {}
    for name, tensor in model.state_dict().items():
        if tensor.numel():  # empty tensors share the null address without being tied
            names_by_storage.setdefault(tensor.data_ptr(), []).append(name)
    state = dict(state)
    for names in names_by_storage.values():
        present = [name for name in names if name in state]
        for name in names:
            if present and name not in state:
                state[name] = state[present[0]]
    return state


def _load_state_dict_file(cfg: DetectorConfig, num_classes: int, path: str, where: str) -> transformers.PreTrainedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    # Read as saved: checkpoint_io.read_state_dict would strip the "model." prefix every RT-DETR key shares.
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: {path} is not a readable .safetensors file ({e})") from None
    _, detector_class = _family(cfg, where)
    model = detector_class(detector_config(cfg, num_classes, where=where))  # every tensor comes from the file
    state = _with_tied_aliases(state, model)
    report = LoadReport(path=path, fmt=f"{cfg.family} state dict")
    compare(state, model, report)
    if not report.ok:
        raise CheckpointError(
            f"{where}: {report.describe()}\nexpected model.state_dict() of the spec's detector ({cfg.family} on "
            f"{cfg.backbone}, {num_classes} classes)"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_detector(cfg: DetectorConfig, num_classes: int, path: str, *, where: str) -> transformers.PreTrainedModel:
    """A trained detector (the teacher), loaded strictly from ``path``:

    - a folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``): its config defines the
      architecture; its ``model_type`` must be ``cfg.family``'s and it must detect ``num_classes`` classes;
    - a ``.safetensors`` state dict (``model.state_dict()`` names) of the detector ``cfg`` builds.

    Anything else, or a key/shape mismatch, raises ``CheckpointError`` naming ``where`` (the spec field).
    """
    accepted = "a save_pretrained folder (config.json + model.safetensors) or a .safetensors state dict"
    if not path:
        raise CheckpointError(f"{where} is not set; give {accepted}")
    if os.path.isdir(path):
        return _load_folder(cfg, num_classes, path, where)
    if not os.path.isfile(path):
        raise CheckpointError(f"{where}: {path} does not exist; give {accepted}")
    if path.endswith(".safetensors"):
        return _load_state_dict_file(cfg, num_classes, path, where)
    if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
        raise CheckpointError(
            f"{where}: {path} is a pickled checkpoint, which is not loaded (it could run code); convert it once, "
            "where you trust it, with model.save_pretrained(folder) or safetensors.torch.save_model(model, "
            f"'teacher.safetensors'), and give {accepted}"
        )
    raise CheckpointError(f"{where}: {path} is not {accepted}")


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no trainable tensor (a teacher)."""
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass
class CopyReport:
    """What ``copy_teacher_enc_dec`` copied, by teacher tensor name (everything outside the backbone)."""

    copied: List[str] = field(default_factory=list)
    shape_mismatch: List[str] = field(default_factory=list)
    missing_in_student: List[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line, two when some teacher tensor has no namesake in the student."""
        total = len(self.copied) + len(self.shape_mismatch) + len(self.missing_in_student)
        line = f"copied {len(self.copied)} of {total} teacher tensors outside the backbone"
        if self.shape_mismatch:
            line += f"; {len(self.shape_mismatch)} differ in shape: {_names(self.shape_mismatch)}"
        if self.missing_in_student:
            line += f"\n{len(self.missing_in_student)} are not in the student: {_names(self.missing_in_student)}"
        return line


@torch.no_grad()
def copy_teacher_enc_dec(student: nn.Module, teacher: nn.Module) -> CopyReport:
    """Copy every teacher tensor outside the backbone (input projections, encoder, decoder, heads, query and
    denoising embeddings, their buffers) whose name and shape the student shares (``model.load_teacher_enc_dec``).

    The backbones differ between a student and its teacher by design, so they are left alone; so is any tensor
    whose shape differs (a different width, level count or class count), which is reported instead.
    """
    report = CopyReport()
    own = student.state_dict()
    for name, tensor in teacher.state_dict().items():
        if name.startswith(BACKBONE_PREFIX):
            continue
        if name not in own:
            report.missing_in_student.append(name)
        elif own[name].shape != tensor.shape:
            report.shape_mismatch.append(name)
        else:
            own[name].copy_(tensor)
            report.copied.append(name)
    return report


def export_detector(model: transformers.PreTrainedModel, folder: str) -> None:
    """Write ``model`` as ``config.json`` + ``model.safetensors`` in ``folder``, which
    ``transformers.AutoModelForObjectDetection.from_pretrained(folder)`` reloads offline with the same outputs.

    Written beside it and moved into place, so an interrupted export never leaves a half-written folder where a
    complete one (or nothing) was; transformers' per-shard progress bar is left out."""
    folder = os.path.normpath(folder)
    staging, previous = f"{folder}.tmp", f"{folder}.previous"
    shutil.rmtree(staging, ignore_errors=True)
    with _quiet_progress():
        model.save_pretrained(staging)
    if os.path.isdir(folder):
        os.replace(folder, previous)
    os.replace(staging, folder)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def _quiet_progress():
    """transformers' per-shard progress bars (loading, saving) off: a run prints its own progress."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
