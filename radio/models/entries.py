"""Registry entries: C-RADIO students/teachers, timm-built teachers under short names, tiny test variants.

Every constructor takes ``img_size`` (teachers: the resolution position embeddings are sized for; other
sizes still work), ``num_classes`` (0: no classifier), ``drop_path_rate`` and model-specific overrides.
Sizes are those of the released checkpoints (see ``docs/checkpoint_layouts.md``).
"""

from functools import partial
from typing import Optional, Sequence

import timm
import torch
import torch.nn as nn
from timm.layers import LayerNorm
from timm.models.vision_transformer import VisionTransformer

from radio.models.cradio import RadioViT
from radio.models.reference_grid import with_reference_grid
from radio.models.registry import ModelInfo, UnknownModelError, register_model
from radio.models.sam import SAM_PATCH, SamImageEncoder


def _register_cradio(
    name: str,
    *,
    short_name: str,
    dim: int,
    depth: int,
    heads: int,
    num_cls_tokens: int = 4,
    num_registers: int = 4,
    summary_idxs: Sequence[int] = (0, 1, 2),
    cpe_max_size: int = 2048,
    init_values: Optional[float] = None,
    cpe_align_corners: bool = True,
    img_size: int = 512,
) -> None:
    info = ModelInfo(
        name=name,
        embed_dim=dim,
        summary_dim=dim * len(summary_idxs),
        patch_size=16,
        img_size=img_size,
        num_prefix_tokens=num_cls_tokens + num_registers,
        depth=depth,
        num_heads=heads,
        is_student=True,
        short_name=short_name,
    )
    defaults = dict(
        num_cls_tokens=num_cls_tokens,
        num_registers=num_registers,
        summary_idxs=tuple(summary_idxs),
        cpe_max_size=cpe_max_size,
    )

    @register_model(info)
    def build(*, img_size: Optional[int] = None, num_classes: int = 0, drop_path_rate: float = 0.0, **overrides):
        # CPE serves any input size, so img_size needs no action; C-RADIO has no classifier.
        if num_classes:
            raise ValueError(f"{name} has no classifier head; use num_classes: 0")
        kwargs = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return RadioViT(
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            patch_size=16,
            init_values=init_values,
            drop_path_rate=drop_path_rate,
            cpe_align_corners=cpe_align_corners,
            **kwargs,
        )


# C-RADIOv3: 8 prefix rows (4 CLS slots + 4 registers). The released v3-L pos-embed resize uses
# align_corners=False; B and H use True.
_register_cradio(
    "c_radio_v3_vit_base_patch16_reg4_dinov2", short_name="cradio_b", dim=768, depth=12, heads=12, init_values=1e-5
)
_register_cradio(
    "c_radio_v3_vit_large_patch16_reg4_dinov2",
    short_name="cradio_l",
    dim=1024,
    depth=24,
    heads=16,
    init_values=1e-5,
    cpe_align_corners=False,
)
_register_cradio("c_radio_v3_vit_huge_patch16_reg4_dinov2", short_name="cradio_h", dim=1280, depth=32, heads=16)
# C-RADIOv2.5: the same ViTs without layer scale.
_register_cradio("c_radio_v2_vit_base_patch16", short_name="cradio_v2_b", dim=768, depth=12, heads=12)
_register_cradio("c_radio_v2_vit_large_patch16", short_name="cradio_v2_l", dim=1024, depth=24, heads=16)
_register_cradio("c_radio_v2_vit_huge_patch16", short_name="cradio_v2_h", dim=1280, depth=32, heads=16)
# Tiny student for tests and the CPU quickstart.
_register_cradio(
    "c_radio_tiny_patch16",
    short_name="cradio_tiny",
    dim=64,
    depth=4,
    heads=2,
    num_registers=2,
    cpe_max_size=256,
    init_values=1e-5,
    img_size=64,
)


def _register_vit(
    name: str,
    *,
    short_name: str,
    timm_name: Optional[str] = None,
    vit_kwargs: Optional[dict] = None,
    dim: int,
    depth: int,
    heads: int,
    patch: int,
    img: int,
    prefix: int,
    proj_dim: int = 0,
    norm: Optional[tuple] = None,
    grid_antialias: Optional[bool] = None,
) -> None:
    """A teacher built by timm: ``timm_name`` (a timm entrypoint, ``vit_kwargs`` overriding its arguments)
    or a ``VisionTransformer(**vit_kwargs)``.

    ``proj_dim``: width of the CLIP-style projection that turns the pooled token into the summary.
    ``norm``: (mean, std) of the inputs the public weights were trained with.
    ``grid_antialias``: None keeps timm's position-grid resampling; True / False keeps the native grid and
    resamples it at every forward like the reference implementation, with / without antialiasing
    (``models/reference_grid.py``), whatever size the teacher is built for.
    """
    info = ModelInfo(
        name=name,
        embed_dim=dim,
        summary_dim=proj_dim or dim,
        patch_size=patch,
        img_size=img,
        num_prefix_tokens=prefix,
        depth=depth,
        num_heads=heads,
        summary_proj=bool(proj_dim),
        norm=norm,
        short_name=short_name,
    )

    @register_model(info)
    def build(*, img_size: Optional[int] = None, num_classes: int = 0, drop_path_rate: float = 0.0, **kwargs):
        args = dict(
            img_size=img if grid_antialias is not None else img_size or img,
            # The projection is timm's ``head``; a classifier (num_classes > 0) replaces it.
            num_classes=num_classes or proj_dim,
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,  # position embeddings follow the actual input size
            **kwargs,
        )
        if timm_name is not None:
            model = timm.create_model(timm_name, pretrained=False, **(vit_kwargs or {}), **args)
        else:
            model = VisionTransformer(**vit_kwargs, **args)
        return model if grid_antialias is None else with_reference_grid(model, antialias=grid_antialias)


# Input normalisation of the public weights, (mean, std) on the 0-1 scale.
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # DINOv2, DINOv3, SAM, timm ImageNet models
OPENAI_CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # CLIP, DFN
SIGLIP_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # SigLIP, SigLIP2

# Layouts shared by the real models and their tiny test variants.
_DINOV2 = dict(init_values=1e-5)
_DINOV2_REG = dict(init_values=1e-5, reg_tokens=4, no_embed_class=True)
_CLIP = dict(pre_norm=True, norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu")
# SigLIP (big_vision, and HF's ``gelu_pytorch_tanh``) uses the tanh approximation of GELU; timm's SigLIP
# entrypoints use the exact one (relative difference 2.7e-4).
_SIGLIP_ACT = dict(act_layer="gelu_tanh")
_SIGLIP = dict(class_token=False, global_pool="map", **_SIGLIP_ACT)
# NV-CLIP (open_clip SigLIP-CLIPA tower): no ln_pre, mean over patch tokens, LayerNorm after pooling,
# bias-free patch embedding (the converter adds its zero bias), LayerNorm eps 1e-5, plain GELU.
_CLIPA = dict(global_pool="avg", fc_norm=True, norm_layer=partial(LayerNorm, eps=1e-5), act_layer=nn.GELU)

for _size, _short, _dim, _depth, _heads in (
    ("small", "s", 384, 12, 6),
    ("base", "b", 768, 12, 12),
    ("large", "l", 1024, 24, 16),
    ("giant", "g", 1536, 40, 24),
):
    _register_vit(
        f"dinov2_vit_{_size}_patch14",
        short_name=f"dinov2_{_short}",
        timm_name=f"vit_{_size}_patch14_dinov2",
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=14,
        img=518,
        prefix=1,
        norm=IMAGENET_NORM,
        grid_antialias=False,  # DINOv2 and HF Dinov2Model
    )
    _register_vit(
        f"dinov2_vit_{_size}_patch14_reg4",
        short_name=f"dinov2_{_short}_reg4",
        timm_name=f"vit_{_size}_patch14_reg4_dinov2",
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=14,
        img=518,
        prefix=5,
        norm=IMAGENET_NORM,
        grid_antialias=True,  # HF Dinov2WithRegistersModel
    )

# DINOv3 (timm's EVA family: rotary position embedding, 1 CLS + 4 registers); its summary is the CLS token
# as upstream, not timm's default average pooling.
for _size, _short, _dim, _depth, _heads in (
    ("small", "s", 384, 12, 6),
    ("base", "b", 768, 12, 12),
    ("large", "l", 1024, 24, 16),
    ("huge_plus", "hplus", 1280, 32, 20),
    ("7b", "7b", 4096, 40, 32),
):
    _register_vit(
        f"dinov3_vit_{_size}_patch16",
        short_name=f"dinov3_{_short}",
        timm_name=f"vit_{_size}_patch16_dinov3",
        vit_kwargs=dict(global_pool="token"),
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=16,
        img=256,
        prefix=5,
        norm=IMAGENET_NORM,
    )

# SigLIP / SigLIP2 (the v2 releases reuse the v1 architectures) and the SO400M shape. Short names: family
# and size, plus the resolution for all but a family's first (which also tells SigLIP2's two patch sizes apart).
for _name, _short, _timm, _dim, _depth, _heads, _patch, _img in (
    ("siglip_vit_base_patch16_224", "siglip_b", "vit_base_patch16_siglip_224", 768, 12, 12, 16, 224),
    ("siglip_so400m_patch14_224", "siglip_so400m", "vit_so400m_patch14_siglip_224", 1152, 27, 16, 14, 224),
    ("siglip_so400m_patch14_384", "siglip_so400m_384", "vit_so400m_patch14_siglip_384", 1152, 27, 16, 14, 384),
    ("siglip2_so400m_patch14_224", "siglip2_so400m", "vit_so400m_patch14_siglip_224", 1152, 27, 16, 14, 224),
    ("siglip2_so400m_patch14_378", "siglip2_so400m_378", "vit_so400m_patch14_siglip_378", 1152, 27, 16, 14, 378),
    ("siglip2_so400m_patch16_256", "siglip2_so400m_256", "vit_so400m_patch16_siglip_256", 1152, 27, 16, 16, 256),
    ("siglip2_so400m_patch16_384", "siglip2_so400m_384", "vit_so400m_patch16_siglip_384", 1152, 27, 16, 16, 384),
    ("siglip2_so400m_patch16_512", "siglip2_so400m_512", "vit_so400m_patch16_siglip_512", 1152, 27, 16, 16, 512),
    ("siglip2_giantopt_patch16_256", "siglip2_g", "vit_giantopt_patch16_siglip_256", 1536, 40, 16, 16, 256),
    ("siglip2_giantopt_patch16_384", "siglip2_g_384", "vit_giantopt_patch16_siglip_384", 1536, 40, 16, 16, 384),
):
    _register_vit(
        _name,
        short_name=_short,
        timm_name=_timm,
        vit_kwargs=_SIGLIP_ACT,
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=_patch,
        img=_img,
        prefix=0,
        norm=SIGLIP_NORM,
        grid_antialias=False,  # HF SigLIP
    )

# OpenAI CLIP and DFN CLIP were trained with QuickGELU; timm's *_clip_quickgelu_* models match them. The
# open_clip CLIPs trained with plain GELU (LAION-2B, DataComp: open_clip's ``ViT-B-16``, ``ViT-L-14``,
# ``ViT-H-14``) have their own entries: in a QuickGELU entry they would load without a word and compute
# something else.
for _name, _short, _timm, _dim, _depth, _heads, _patch, _img, _proj in (
    ("clip_vit_base_patch16_224", "clip_b", "vit_base_patch16_clip_quickgelu_224", 768, 12, 12, 16, 224, 512),
    ("clip_vit_large_patch14_224", "clip_l", "vit_large_patch14_clip_quickgelu_224", 1024, 24, 16, 14, 224, 768),
    ("clip_vit_large_patch14_336", "clip_l_336", "vit_large_patch14_clip_quickgelu_336", 1024, 24, 16, 14, 336, 768),
    ("dfn_clip_vit_huge_patch14_224", "dfn_clip_h", "vit_huge_patch14_clip_quickgelu_224", 1280, 32, 16, 14, 224, 1024),
    (
        "dfn_clip_vit_huge_patch14_378",
        "dfn_clip_h_378",
        "vit_huge_patch14_clip_quickgelu_378",
        1280,
        32,
        16,
        14,
        378,
        1024,
    ),
    ("openclip_vit_base_patch16_224", "openclip_b", "vit_base_patch16_clip_224", 768, 12, 12, 16, 224, 512),
    ("openclip_vit_large_patch14_224", "openclip_l", "vit_large_patch14_clip_224", 1024, 24, 16, 14, 224, 768),
    ("openclip_vit_huge_patch14_224", "openclip_h", "vit_huge_patch14_clip_224", 1280, 32, 16, 14, 224, 1024),
):
    _register_vit(
        _name,
        short_name=_short,
        timm_name=_timm,
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=_patch,
        img=_img,
        prefix=1,
        proj_dim=_proj,
        norm=OPENAI_CLIP_NORM,
        grid_antialias=False,  # HF CLIP (OpenAI and open_clip have no interpolation)
    )

for _name, _short, _dim, _depth, _heads, _img, _proj in (
    ("vit_h_14_siglip_clipa_224", "clipa_h", 1280, 32, 16, 224, 1024),
    ("vit_l_14_siglip_clipa_224", "clipa_l", 1024, 24, 16, 224, 768),
    ("vit_l_14_siglip_clipa_336", "clipa_l_336", 1024, 24, 16, 336, 768),
):
    _register_vit(
        _name,
        short_name=_short,
        vit_kwargs=dict(_CLIPA, patch_size=14, embed_dim=_dim, depth=_depth, num_heads=_heads),
        dim=_dim,
        depth=_depth,
        heads=_heads,
        patch=14,
        img=_img,
        prefix=1,
        proj_dim=_proj,
    )

# Tiny variants (depth 2, 2 heads): the demo teachers of the CPU quickstart, and one per public layout for
# the loader tests. name: (short name, layout, patch, width, img, prefix tokens, projection width)
_TINY = {
    "demo_vit_tiny_patch16": ("demo_p16", {}, 16, 96, 64, 1, 0),
    "demo_vit_tiny_patch14": ("demo_p14", _DINOV2_REG, 14, 128, 56, 5, 0),
    "tiny_dinov2_vit_patch14": ("tiny_dinov2", _DINOV2, 14, 48, 56, 1, 0),
    "tiny_dinov2_vit_patch14_reg4": ("tiny_dinov2_reg4", _DINOV2_REG, 14, 48, 56, 5, 0),
    "tiny_clip_vit_patch16": ("tiny_clip", _CLIP, 16, 64, 64, 1, 32),
    "tiny_openclip_vit_patch16": ("tiny_openclip", dict(_CLIP, act_layer=nn.GELU), 16, 64, 64, 1, 32),
    "tiny_siglip_vit_patch16": ("tiny_siglip", _SIGLIP, 16, 64, 64, 0, 0),
    "tiny_clipa_vit_patch14": ("tiny_clipa", _CLIPA, 14, 64, 56, 1, 32),
}
# The tiny stand-ins of reference-checked families resample like their references (see the full entries).
_TINY_GRID_ANTIALIAS = {
    "tiny_dinov2_vit_patch14": False,
    "tiny_dinov2_vit_patch14_reg4": True,
    "tiny_clip_vit_patch16": False,
    "tiny_openclip_vit_patch16": False,
    "tiny_siglip_vit_patch16": False,
}
for _name, (_short, _layout, _patch, _width, _img, _prefix, _proj) in _TINY.items():
    _register_vit(
        _name,
        short_name=_short,
        vit_kwargs=dict(_layout, patch_size=_patch, embed_dim=_width, depth=2, num_heads=2),
        dim=_width,
        depth=2,
        heads=2,
        patch=_patch,
        img=_img,
        prefix=_prefix,
        proj_dim=_proj,
        grid_antialias=_TINY_GRID_ANTIALIAS.get(_name),
    )


def _register_sam(
    name: str,
    *,
    short_name: str,
    dim: int,
    depth: int,
    heads: int,
    global_blocks: Sequence[int],
    window: int = 14,
    neck: int = 256,
    img: int = 1024,
) -> None:
    """A SAM image encoder (``SamImageEncoder``): a spatial-only teacher, its spatial map the ``neck``-channel
    output SAM's mask decoder reads; ``global_blocks`` attend globally, the others in ``window``-sized windows."""
    info = ModelInfo(
        name=name,
        embed_dim=neck,
        summary_dim=0,
        patch_size=SAM_PATCH,
        img_size=img,
        num_prefix_tokens=0,
        depth=depth,
        num_heads=heads,
        norm=IMAGENET_NORM,  # SAM's pixel_mean / pixel_std
        short_name=short_name,
    )

    @register_model(info)
    def build(*, img_size: Optional[int] = None, num_classes: int = 0, drop_path_rate: float = 0.0, **overrides):
        if num_classes:
            raise ValueError(f"{name} has no classifier head; use num_classes: 0")
        return SamImageEncoder(
            img_size=img_size or img,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            global_attn_indexes=global_blocks,
            window_size=window,
            neck_chans=neck,
            drop_path_rate=drop_path_rate,
            **overrides,
        )


# SAM ViT-B/L/H: the shapes of timm's samvit_{base,large,huge}_patch16 (= segment_anything's build_sam_vit_*).
_register_sam("sam_vit_b", short_name="sam_b", dim=768, depth=12, heads=12, global_blocks=(2, 5, 8, 11))
_register_sam("sam_vit_l", short_name="sam_l", dim=1024, depth=24, heads=16, global_blocks=(5, 11, 17, 23))
_register_sam("sam_vit_h", short_name="sam_h", dim=1280, depth=32, heads=16, global_blocks=(7, 15, 23, 31))
# Tiny SAM for the loader tests: grid 16 in windows of 5 (padded to 20, as the real 64 in windows of 14 is).
_register_sam(
    "tiny_sam_vit_patch16",
    short_name="tiny_sam",
    dim=64,
    depth=2,
    heads=2,
    global_blocks=(1,),
    window=5,
    neck=32,
    img=256,
)


def _timm_name(name: str) -> str:
    model_name = name[len("timm/") :]
    if not timm.is_model(model_name):
        raise UnknownModelError(f"unknown timm model {model_name!r} (from {name!r}); see timm.list_models()")
    return model_name


def create_timm_model(
    name: str, *, img_size: Optional[int] = None, num_classes: int = 0, drop_path_rate: float = 0.0, **kwargs
) -> nn.Module:
    """``timm/<name>``: any timm model, random init (weights come from the teacher checkpoint)."""
    model_name = _timm_name(name)
    args = dict(num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)
    try:
        # ViT-family models accept an input size and resample position embeddings to the actual input.
        return timm.create_model(model_name, pretrained=False, img_size=img_size, dynamic_img_size=True, **args)
    except TypeError:
        return timm.create_model(model_name, pretrained=False, **args)


def timm_model_info(name: str) -> ModelInfo:
    """ModelInfo for ``timm/<name>``, read from the model built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = create_timm_model(name)
    img = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
    norm = (tuple(mean), tuple(std)) if mean and std else None
    summary_dim = getattr(model, "head_hidden_size", model.num_features)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        patch = model.patch_embed.patch_size
        return ModelInfo(
            name=name,
            embed_dim=model.embed_dim,
            summary_dim=summary_dim,
            patch_size=patch[0] if isinstance(patch, (tuple, list)) else patch,
            img_size=img,
            num_prefix_tokens=getattr(model, "num_prefix_tokens", 0),
            depth=len(model.blocks),
            num_heads=getattr(model.blocks[0].attn, "num_heads", 0),
            norm=norm,
        )
    # Convolutional and hierarchical models: the spatial map is the last feature map.
    reduction = model.feature_info[-1]["reduction"] if getattr(model, "feature_info", None) else 32
    return ModelInfo(
        name=name,
        embed_dim=model.num_features,
        summary_dim=summary_dim,
        patch_size=reduction,
        img_size=img,
        num_prefix_tokens=0,
        depth=0,
        num_heads=0,
        norm=norm,
    )
