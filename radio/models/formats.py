"""Public checkpoint layouts -> our models' state-dict names.

``to_model_layout(state_dict, model, path, role)`` detects the layout from its key names and maps it:

- C-RADIO (HF ``radio_model.*``, TorchHub ``base_model.*`` / ``_heads`` / ``_feature_projections`` /
  ``_feature_normalizer``, or a bare backbone such as our own export) -> ``RadioViT``;
- HF-transformers CLIP / SigLIP / SigLIP2 / DINOv2 vision towers (under ``vision_model.``, or unprefixed as
  the vision-only models of transformers >= 5 save them) -> timm names;
- timm, OpenAI CLIP, open_clip (native and timm-trunk), original DINOv2 -> timm ``VisionTransformer``, and
  other timm families (EVA: DINOv3, ...) through timm's own ``checkpoint_filter_fn`` of that family, which
  also resamples position embeddings to the model's input size (patch kernels are never resampled).

Key names are in ``docs/checkpoint_layouts.md``.
"""

import math
import re
import sys
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM

from radio.errors import CheckpointError
from radio.models.checkpoint_io import LoadReport
from radio.models.cradio import FeatureNormalizer, RadioAdaptor, RadioViT
from radio.models.heads import mlp2_from_state_dict
from radio.models.sam import is_segment_anything_layout, segment_anything_to_timm

StateDict = Dict[str, torch.Tensor]


def detect_format(sd: StateDict) -> str:
    """Name of the layout ``sd`` is in (see the module docstring)."""
    keys = sd.keys()
    if any(k.startswith("radio_model.") for k in keys):
        return "c_radio_hf"
    if "base_model.patch_generator.embedder.weight" in sd:
        return "c_radio_hub"
    if "patch_generator.embedder.weight" in sd:
        return "c_radio"
    if "vision_model.embeddings.class_embedding" in sd or "embeddings.class_embedding" in sd:
        return "hf_clip"
    hf_patch = sd.get("vision_model.embeddings.patch_embedding.weight", sd.get("embeddings.patch_embedding.weight"))
    if hf_patch is not None:  # SigLIP2 (NaFlex) embeds flattened patches with a Linear, SigLIP with a conv
        return "hf_siglip2" if hf_patch.dim() == 2 else "hf_siglip"
    if "embeddings.patch_embeddings.projection.weight" in sd:
        return "hf_dinov2"
    if any(k.startswith(("visual.trunk.", "module.visual.trunk.")) for k in keys):
        return "open_clip_timm"
    if "visual.class_embedding" in sd or "module.visual.class_embedding" in sd:
        return "openai_clip"
    if is_segment_anything_layout(sd):
        return "segment_anything"
    if "mask_token" in sd:
        return "dinov2"
    return "timm"


# ---------------------------------------------------------------------------------------------- C-RADIO
def _split_cradio(sd: StateDict, fmt: str) -> Tuple[StateDict, StateDict]:
    """-> (backbone keys, extras in RadioViT naming: feature_normalizer.*, adaptors.<name>.{head,feat}_mlp.*)."""
    backbone, extras = {}, {}
    if fmt == "c_radio_hf":
        for k, v in sd.items():
            k = k[len("radio_model.") :] if k.startswith("radio_model.") else k
            if k.startswith("model."):
                backbone[k[len("model.") :]] = v
            else:  # feature_normalizer.*, adaptors.*, input_conditioner.*, summary_idxs
                extras[k] = v
    elif fmt == "c_radio_hub":
        for k, v in sd.items():
            if k.startswith("base_model."):
                backbone[k[len("base_model.") :]] = v
            elif k.startswith("_heads."):
                name, rest = k[len("_heads.") :].split(".", 1)
                extras[f"adaptors.{name}.head_mlp.{rest}"] = v
            elif k.startswith("_feature_projections."):
                name, rest = k[len("_feature_projections.") :].split(".", 1)
                extras[f"adaptors.{name}.feat_mlp.{rest}"] = v
            elif k.startswith("_feature_normalizer."):
                extras["feature_normalizer." + k[len("_feature_normalizer.") :]] = v
            else:
                extras[k] = v
    else:
        for k, v in sd.items():
            (
                extras
                if k.startswith(
                    ("feature_normalizer.", "adaptors.", "input_conditioner.", "summary_idxs", "classifier.")
                )
                else backbone
            )[k] = v
    return backbone, extras


SN_ORIGINAL = ".parametrizations.weight.original"
SN_ALPHA, SN_EPS = 0.05, 1e-6  # C-RADIO's spectral reparametrisation constants (eps is not stored)


def _spectral_weight(original: torch.Tensor, params: StateDict, prefix: str) -> torch.Tensor:
    """W = original · s / σ, σ = u·(original v) + eps; s = scale (version 1) or softplus(scale) + 0.05 (v2)."""
    u, v, scale = params[prefix + "_u"], params[prefix + "_v"], params[prefix + "scale"].reshape(())
    version = int(params.get(prefix + "_sn_version", torch.tensor(1)))
    mat = original.flatten(1).double()
    sigma = torch.dot(u.double(), mat @ v.double()) + SN_EPS
    s = scale.double() if version == 1 else F.softplus(scale.double()) + SN_ALPHA
    return (mat * (s / sigma)).reshape(original.shape).to(original.dtype)


def _fold_spectral_reparam(sd: StateDict, report: LoadReport) -> StateDict:
    """Spectral-reparametrised linears (``<lin>.parametrizations.weight.original`` + ``.0._u/_v/scale``;
    qkv per third under ``.0.parts.<i>.``, an un-normalised third having none) -> plain ``<lin>.weight``."""
    out = {k: v for k, v in sd.items() if ".parametrizations.weight." not in k}
    for key in [k for k in sd if k.endswith(SN_ORIGINAL)]:
        base = key[: -len(SN_ORIGINAL)]
        params_prefix = f"{base}.parametrizations.weight.0."
        params = {k: v for k, v in sd.items() if k.startswith(params_prefix)}
        original = sd[key]
        if any(k.startswith(params_prefix + "parts.") for k in params):
            parts = []
            for i, part in enumerate(original.chunk(3)):
                pre = f"{params_prefix}parts.{i}."
                parts.append(_spectral_weight(part, params, pre) if pre + "_u" in params else part)
            out[base + ".weight"] = torch.cat(parts)
        else:
            out[base + ".weight"] = _spectral_weight(original, params, params_prefix)
    report.notes.append(f"spectral reparametrisation folded into {sum(k.endswith(SN_ORIGINAL) for k in sd)} weights")
    return out


def _resize_grid(pos: torch.Tensor, side: int) -> torch.Tensor:
    """pos [1, g*g, C] -> [1, side*side, C], bilinear over the square grid."""
    g = int(round(pos.shape[1] ** 0.5))
    grid = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=True)
    return grid.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(pos.dtype)


def _adapt_prefix_rows(
    token: torch.Tensor, model: RadioViT, source_split: Tuple[int, int], report: LoadReport
) -> torch.Tensor:
    """Student init: map the checkpoint's [CLS slots, registers] rows onto a student with other counts.

    ``source_split``: (CLS, registers) of the checkpoint's model type in the registry (checkpoints do not
    record it); the last ``registers`` rows are registers, the rest CLS slots. Slots the checkpoint lacks
    start as copies of its first CLS slot (a trained token rather than noise); surplus rows are dropped.
    """
    rows = token.shape[0]
    src_regs = min(source_split[1], rows - 1)
    cls, regs = token[: rows - src_regs], token[rows - src_regs :]

    def fit(part: torch.Tensor, n: int) -> torch.Tensor:
        seed = part if len(part) else token[:1]
        return torch.cat([seed, seed[:1].expand(max(0, n - len(seed)), -1)])[:n]

    report.notes.append(
        f"CLS/register rows adapted: checkpoint {len(cls)} CLS + {src_regs} registers -> "
        f"model {model.num_cls_tokens} CLS + {model.num_registers} registers"
    )
    return torch.cat([fit(cls, model.num_cls_tokens), fit(regs, model.num_registers)])


def _cradio_to_model(
    sd: StateDict, fmt: str, model: RadioViT, role: str, source_split: Tuple[int, int], report: LoadReport
) -> StateDict:
    """C-RADIO layouts -> ``RadioViT`` keys (see ``to_model_layout`` for ``role`` and ``source_split``)."""
    if any(k.endswith(SN_ORIGINAL) for k in sd):
        sd = _fold_spectral_reparam(sd, report)
    backbone, extras = _split_cradio(sd, fmt)
    if "reg_token" in backbone:
        backbone.pop("reg_token")
        report.dropped["reg_token"] = "stale in C-RADIO checkpoints, unused"
    for k in ("input_conditioner.norm_mean", "input_conditioner.norm_std"):
        if k in extras:
            v = extras.pop(k)
            values = "?" if v.is_meta else [round(x, 4) for x in v.flatten().tolist()]
            report.notes.append(f"checkpoint expects inputs normalised with {k.split('_')[-1]} {values}")
    if "summary_idxs" in extras:
        idxs = [int(i) for i in extras.pop("summary_idxs").flatten().tolist()]
        if idxs != model.summary_idxs:
            report.notes.append(f"summary_idxs {idxs} taken from the checkpoint (registry: {model.summary_idxs})")
            model.summary_idxs = idxs

    for k in [k for k in extras if k.startswith("classifier.")]:  # radio's student_final of a classification run
        extras.pop(k)
        report.dropped[k] = "classifier on CLS slot 0, not part of the backbone"

    pos_key, tok_key = "patch_generator.pos_embed", "patch_generator.cls_token.token"
    if role == "student":
        for k in list(extras):
            report.dropped[k] = "C-RADIO adaptor/normaliser, not part of the student backbone"
        extras = {}
        grid = model.patch_generator.grid
        if pos_key in backbone and backbone[pos_key].shape[1] != grid * grid:
            report.notes.append(f"position grid resampled to {grid}x{grid} (cpe_max_size {model.cpe_max_size})")
            backbone[pos_key] = _resize_grid(backbone[pos_key], grid)
        if tok_key in backbone and backbone[tok_key].shape[0] != model.num_prefix_tokens:
            backbone[tok_key] = _adapt_prefix_rows(backbone[tok_key], model, source_split, report)
    else:
        if "feature_normalizer.mean" in extras:
            model.feature_normalizer = FeatureNormalizer(extras["feature_normalizer.mean"].shape[0])
        names = sorted({k.split(".")[1] for k in extras if k.startswith("adaptors.")})
        for name in names:
            sub = {k[len(f"adaptors.{name}.") :]: v for k, v in extras.items() if k.startswith(f"adaptors.{name}.")}
            model.adaptors[name] = RadioAdaptor(
                mlp2_from_state_dict(sub, "head_mlp.") if "head_mlp.fc1.weight" in sub else None,
                mlp2_from_state_dict(sub, "feat_mlp.") if "feat_mlp.fc1.weight" in sub else None,
            )
        if names:
            report.notes.append(f"adaptor heads loaded: {', '.join(names)}")
    return {**backbone, **extras}


# ------------------------------------------------------------------------------------- HF transformers
def _cat_qkv(sd: StateDict, out: StateDict, src: str, names: Tuple[str, str, str], dst: str) -> None:
    for kind in ("weight", "bias"):
        parts = [f"{src}.{n}.{kind}" for n in names]
        if all(p in sd for p in parts):
            out[f"{dst}.{kind}"] = torch.cat([sd[p] for p in parts])


_HF_LAYER = [  # HF CLIP/SigLIP encoder layer -> timm block
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
    ("self_attn.out_proj", "attn.proj"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
]


_HF_VISION = {  # HF CLIP/SigLIP/SigLIP2 vision tower -> timm ViT, tensors that are only renamed
    "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
    "pre_layrnorm.weight": "norm_pre.weight",
    "pre_layrnorm.bias": "norm_pre.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
    "head.probe": "attn_pool.latent",
    "head.attention.out_proj.weight": "attn_pool.proj.weight",
    "head.attention.out_proj.bias": "attn_pool.proj.bias",
    "head.layernorm.weight": "attn_pool.norm.weight",
    "head.layernorm.bias": "attn_pool.norm.bias",
    "head.mlp.fc1.weight": "attn_pool.mlp.fc1.weight",
    "head.mlp.fc1.bias": "attn_pool.mlp.fc1.bias",
    "head.mlp.fc2.weight": "attn_pool.mlp.fc2.weight",
    "head.mlp.fc2.bias": "attn_pool.mlp.fc2.bias",
}


def _hf_clip_like(sd: StateDict, report: LoadReport) -> StateDict:
    """HF ``CLIPModel``/``CLIPVisionModel(WithProjection)``, ``SiglipModel``/``SiglipVisionModel`` and
    ``Siglip2Model``/``Siglip2VisionModel`` -> timm ViT keys.

    The tower is under ``vision_model.``, except in the vision-only models of transformers >= 5, which
    save it unprefixed. SigLIP2's patch embedding is a Linear [C, p·p·3] over patches flattened as
    (y, x, channel); it becomes the conv kernel [C, 3, p, p].
    """
    out: StateDict = {}
    pre = "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""
    for k, v in sd.items():
        if k == "visual_projection.weight":
            out["head.weight"] = v
            out["head.bias"] = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
            continue
        if not k.startswith(pre):
            report.dropped[k] = "not part of the vision tower"
            continue
        k = k[len(pre) :]
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)", k)
        if m:
            i, rest = m.groups()
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue  # fused below
            for a, b in _HF_LAYER:
                if rest.startswith(a + "."):
                    out[f"blocks.{i}.{b}{rest[len(a) :]}"] = v
                    break
            else:
                report.dropped[pre + k] = "unknown HF encoder key"
            continue
        if k in _HF_VISION:
            out[_HF_VISION[k]] = v
        elif k == "embeddings.patch_embedding.weight":
            if v.dim() == 2:
                p = math.isqrt(v.shape[1] // 3)
                v = v.reshape(v.shape[0], p, p, 3).permute(0, 3, 1, 2).contiguous()
            out["patch_embed.proj.weight"] = v
        elif k == "embeddings.class_embedding":
            out["cls_token"] = v.reshape(1, 1, -1)
        elif k == "embeddings.position_embedding.weight":
            out["pos_embed"] = v.unsqueeze(0)
        elif k in ("head.attention.in_proj_weight", "head.attention.in_proj_bias"):
            kind = "weight" if k.endswith("weight") else "bias"
            dim = v.shape[0] // 3
            out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = v[:dim], v[dim:]
        elif k == "embeddings.position_ids":
            report.dropped[pre + k] = "index buffer"
        else:
            report.dropped[pre + k] = "unknown HF vision key"
    layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(pre) + r"encoder\.layers\.(\d+)\.", k))}
    for i in layers:
        _cat_qkv(sd, out, f"{pre}encoder.layers.{i}.self_attn", ("q_proj", "k_proj", "v_proj"), f"blocks.{i}.attn.qkv")
    return out


def _hf_dinov2(sd: StateDict, report: LoadReport) -> StateDict:
    """HF ``Dinov2Model`` / ``Dinov2WithRegistersModel`` -> original DINOv2 names (timm converts those)."""
    out: StateDict = {}
    rules = [
        (r"embeddings\.cls_token", "cls_token"),
        (r"embeddings\.mask_token", "mask_token"),
        (r"embeddings\.register_tokens", "register_tokens"),
        (r"embeddings\.position_embeddings", "pos_embed"),
        (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
        (r"encoder\.layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),  # transformers >= 5
        (r"encoder\.layer\.(\d+)\.layer_scale1\.lambda1", r"blocks.\1.ls1.gamma"),
        (r"encoder\.layer\.(\d+)\.layer_scale2\.lambda1", r"blocks.\1.ls2.gamma"),
        (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
        (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
        (r"encoder\.layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.", r"blocks.\1.\2."),
        (r"layernorm\.", "norm."),
    ]
    for k, v in sd.items():
        if re.match(r"encoder\.layer\.\d+\.attention\.(attention\.(query|key|value)|[qkv]_proj)\.", k):
            continue  # fused below
        for pat, rep in rules:
            if re.match(pat, k):
                out[re.sub(pat, rep, k, count=1)] = v
                break
        else:
            report.dropped[k] = "unknown HF DINOv2 key"
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    for i in layers:
        _cat_qkv(sd, out, f"encoder.layer.{i}.attention.attention", ("query", "key", "value"), f"blocks.{i}.attn.qkv")
        _cat_qkv(sd, out, f"encoder.layer.{i}.attention", ("q_proj", "k_proj", "v_proj"), f"blocks.{i}.attn.qkv")
    out.setdefault("mask_token", torch.zeros(1))  # marks the original-DINOv2 layout for timm's converter
    return out


# ------------------------------------------------------------------------------------------ timm
def _timm_filter(model: nn.Module):
    """The ``checkpoint_filter_fn`` of the timm module defining ``model``'s class (None if it has none)."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _to_timm(sd: StateDict, fmt: str, model: nn.Module, report: LoadReport) -> StateDict:
    """Map onto a timm model, through the timm model family's own converter (ViT: OpenAI CLIP, open_clip,
    DINOv2; EVA: DINOv3, PE; ...), which also resamples position embeddings to the model's input size."""
    if isinstance(model, VisionTransformer) and fmt in ("hf_clip", "hf_siglip", "hf_siglip2"):
        sd = _hf_clip_like(sd, report)
    elif isinstance(model, VisionTransformer) and fmt == "hf_dinov2":
        sd = _hf_dinov2(sd, report)
    elif fmt == "openai_clip":
        for k in sd:
            if not k.startswith(("visual.", "module.visual.")):
                report.dropped[k] = "not part of the vision tower"
    elif fmt == "open_clip_timm":
        for k in sd:
            if not k.startswith(("visual.trunk.", "module.visual.trunk.", "visual.head.proj.")):
                report.dropped[k] = "not part of the vision tower"
    if fmt in ("dinov2", "hf_dinov2"):
        report.dropped["mask_token"] = "DINOv2 masked-modelling token, unused"
    src_patch = next(
        (
            v
            for k, v in sd.items()
            if v.dim() == 4
            and re.search(r"(patch_embed\.proj|conv1|patch_embedding|patch_embeddings\.projection)\.weight$", k)
        ),
        None,
    )
    # The vision tower's positions (OpenAI CLIP files also hold the text tower's ``positional_embedding``),
    # taken before timm's converter, which may replace entries of ``sd``.
    src_pos = next((v for k, v in sd.items() if k.endswith(("pos_embed", "visual.positional_embedding"))), None)
    filter_fn = _timm_filter(model)
    try:
        out = filter_fn(sd, model) if filter_fn is not None else dict(sd)
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        # timm's converters assume the checkpoint fits the model (e.g. a square position grid of its
        # width); a checkpoint of another architecture fails inside them. Report it as a mismatch.
        raise CheckpointError(
            f"{report.path}: cannot map this {fmt} checkpoint onto {type(model).__name__} "
            f"({type(exc).__name__}: {exc}); it is most likely for another architecture or size — check "
            "model.backbone.type against the file."
        ) from None
    expected = model.state_dict()
    model_patch = expected.get("patch_embed.proj.weight")
    if src_patch is not None and model_patch is not None and src_patch.shape[-2:] != model_patch.shape[-2:]:
        # timm would resample the kernel to the model's patch size; for a teacher that silently changes
        # what it computes, so the original goes back in and the comparison reports it.
        out["patch_embed.proj.weight"] = src_patch
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if src_pos is not None and grid is not None and "pos_embed" in out and "pos_embed" in expected:
        # Compare patch grids: rows for prefix tokens (DINOv2's CLS row, folded into cls_token) are no resampling.
        side, (grid_h, grid_w) = math.isqrt(src_pos.shape[-2]), grid
        if side * side != grid_h * grid_w:
            report.notes.append(
                f"position embeddings resampled from a {side}x{side} to a {grid_h}x{grid_w} grid "
                f"(input size {model.patch_embed.img_size})"
            )
            report.file_shapes["pos_embed"] = tuple(src_pos.shape)
    # NV-CLIP (SigLIP-CLIPA) towers pool before their LayerNorm: timm's CLIP conversion names it ``norm``.
    if "fc_norm.weight" in expected and "norm.weight" not in expected and "norm.weight" in out:
        out["fc_norm.weight"], out["fc_norm.bias"] = out.pop("norm.weight"), out.pop("norm.bias")
    w = out.get("patch_embed.proj.weight")
    if "patch_embed.proj.bias" in expected and "patch_embed.proj.bias" not in out and w is not None:
        out["patch_embed.proj.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        report.notes.append("bias-free patch embedding: zero bias added")
    return out


def _classifier_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """Key prefixes of ``model``'s classifier: timm's ``pretrained_cfg['classifier']`` (ResNet ``fc``,
    EfficientNet ``classifier``, ConvNeXt ``head.fc``, distilled ViTs two), ``head`` for models without it."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def _strip_downstream(sd: StateDict, model: nn.Module, report: LoadReport) -> StateDict:
    """Downstream models (classifier, detector) keep the backbone under ``backbone.``: keep only that."""
    expected = model.state_dict()
    if any(k.startswith("backbone.") for k in expected) or not any(k.startswith("backbone.") for k in sd):
        return sd
    for k in sd:
        if not k.startswith("backbone."):
            report.dropped[k] = "outside the downstream model's backbone"
    return {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}


def to_model_layout(
    sd: StateDict, model: nn.Module, *, path: str, role: str = "teacher", source_split: Tuple[int, int] = (4, 4)
) -> Tuple[StateDict, LoadReport]:
    """Map ``sd`` (any supported layout) to ``model``'s key names. -> (mapped state dict, report).

    ``role`` 'student' (``RadioViT`` only) drops C-RADIO adaptors/normaliser and adapts the CLS rows (the
    checkpoint's (CLS, registers) split is ``source_split``) and the position grid; 'teacher' attaches
    adaptors/normaliser to the model. Keys a layout carries but no model uses (text towers, stale tokens,
    a classifier head the teacher was asked not to build) are dropped and listed in ``report.dropped``.
    """
    report = LoadReport(path=path, fmt="")
    sd = _strip_downstream(sd, model, report)
    fmt = detect_format(sd)
    report.fmt = fmt
    if isinstance(model, RadioViT):
        if fmt.startswith("c_radio"):
            return _cradio_to_model(sd, fmt, model, role, source_split, report), report
        return sd, report  # another architecture: the comparison reports it
    if isinstance(model, VisionTransformerSAM):
        return segment_anything_to_timm(sd, model, report), report
    out = _to_timm(sd, fmt, model, report)
    expected = model.state_dict()
    classifier = _classifier_prefixes(model)
    for k in [k for k in out if k.startswith(classifier) and k not in expected]:
        out.pop(k)
        report.dropped[k] = "classifier head, not built (num_classes: 0)"
    return out, report
