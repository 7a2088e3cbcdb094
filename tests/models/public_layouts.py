"""Writers of the public checkpoint layouts, from a model's native state dict (test helper).

Each writer spells out the public key names and shapes of ``docs/checkpoint_layouts.md`` (and of the
HF-transformers modelling code), independently of ``radio.models.formats``, so a test that writes a layout
here and loads it there checks the mapping. They work on meta tensors too (full-size layouts, no memory).
"""

import argparse
from typing import Dict

import torch

SD = Dict[str, torch.Tensor]


def _blocks(sd: SD):
    """Yield (index, suffix, tensor) for every ``blocks.N.<suffix>`` key."""
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            yield int(i), rest, v


_OPENAI_BLOCK = {
    "norm1.": "ln_1.",
    "norm2.": "ln_2.",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.": "attn.out_proj.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}


def _openai_block_key(rest: str) -> str:
    for a, b in _OPENAI_BLOCK.items():
        if rest.startswith(a):
            return b + rest[len(a) :]
    raise KeyError(rest)


def openai_clip(sd: SD, *, final_norm: str = "norm", with_text: bool = True) -> SD:
    """OpenAI CLIP / open_clip native: ``visual.*`` (+ a text tower that must be ignored).

    ``final_norm``: the timm key that is ``ln_post`` (``fc_norm`` for the SigLIP-CLIPA towers). As in the
    released files, the text tower's own ``positional_embedding`` [77, C] comes first."""
    out: SD = {}
    dim = sd["cls_token"].shape[-1]
    if with_text:
        out["positional_embedding"] = sd["cls_token"].new_zeros(77, dim)
        out["text_projection"] = sd["cls_token"].new_zeros(dim, dim)
        out["logit_scale"] = sd["cls_token"].new_ones(())
    for i, rest, v in _blocks(sd):
        out[f"visual.transformer.resblocks.{i}.{_openai_block_key(rest)}"] = v
    out["visual.conv1.weight"] = sd["patch_embed.proj.weight"]
    out["visual.class_embedding"] = sd["cls_token"].reshape(-1)
    out["visual.positional_embedding"] = sd["pos_embed"][0]
    if "norm_pre.weight" in sd:
        out["visual.ln_pre.weight"], out["visual.ln_pre.bias"] = sd["norm_pre.weight"], sd["norm_pre.bias"]
    out["visual.ln_post.weight"], out["visual.ln_post.bias"] = sd[f"{final_norm}.weight"], sd[f"{final_norm}.bias"]
    out["visual.proj"] = sd["head.weight"].t()
    if with_text:
        out["token_embedding.weight"] = sd["cls_token"].new_zeros(10, dim)
        out["transformer.resblocks.0.attn.in_proj_weight"] = sd["cls_token"].new_zeros(3 * dim, dim)
        out["ln_final.weight"] = sd["cls_token"].new_ones(dim)
    return out


def open_clip_timm(sd: SD) -> SD:
    """open_clip with a timm trunk (``visual.trunk.*``) and a text tower."""
    out = {f"visual.trunk.{k}": v for k, v in sd.items()}
    out["text.token_embedding.weight"] = next(iter(sd.values())).new_zeros(10, 4)
    out["logit_scale"] = next(iter(sd.values())).new_ones(())
    return out


def dinov2_original(sd: SD, *, registers: bool) -> SD:
    """facebookresearch/dinov2 layout: the CLS position is part of ``pos_embed``; ``mask_token``;
    ``register_tokens`` (which have no position) for the +registers models."""
    out = {k: v for k, v in sd.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    dim = sd["cls_token"].shape[-1]
    out["mask_token"] = sd["cls_token"].new_zeros(1, dim) + 0.5
    if registers:
        cls_pos = torch.full_like(sd["cls_token"], 0.25)  # timm folds this into cls_token
        out["cls_token"] = sd["cls_token"] - cls_pos
        out["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
        out["register_tokens"] = sd["reg_token"]
    else:
        out["cls_token"], out["pos_embed"] = sd["cls_token"], sd["pos_embed"]
    return out


def _hf_layers(sd: SD, prefix: str) -> SD:
    out: SD = {}
    names = {
        "norm1.": "layer_norm1.",
        "norm2.": "layer_norm2.",
        "attn.proj.": "self_attn.out_proj.",
        "mlp.fc1.": "mlp.fc1.",
        "mlp.fc2.": "mlp.fc2.",
    }
    for i, rest, v in _blocks(sd):
        base = f"{prefix}encoder.layers.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3)):
                out[f"{base}self_attn.{name}.{kind}"] = part
            continue
        for a, b in names.items():
            if rest.startswith(a):
                out[base + b + rest[len(a) :]] = v
    return out


def hf_clip(sd: SD) -> SD:
    """transformers ``CLIPModel``: ``vision_model.*``, ``visual_projection`` (no bias), text tower."""
    p = "vision_model."
    out = _hf_layers(sd, p)
    out[p + "embeddings.class_embedding"] = sd["cls_token"].reshape(-1)
    out[p + "embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
    out[p + "embeddings.position_embedding.weight"] = sd["pos_embed"][0]
    out[p + "embeddings.position_ids"] = torch.arange(sd["pos_embed"].shape[1], device=sd["pos_embed"].device)[None]
    out[p + "pre_layrnorm.weight"], out[p + "pre_layrnorm.bias"] = sd["norm_pre.weight"], sd["norm_pre.bias"]
    out[p + "post_layernorm.weight"], out[p + "post_layernorm.bias"] = sd["norm.weight"], sd["norm.bias"]
    out["visual_projection.weight"] = sd["head.weight"]
    out["text_model.embeddings.token_embedding.weight"] = sd["cls_token"].new_zeros(10, 4)
    out["logit_scale"] = sd["cls_token"].new_ones(())
    return out


def hf_siglip(sd: SD, prefix: str = "vision_model.") -> SD:
    """transformers ``SiglipModel`` / ``SiglipVisionModel``: ``vision_model.*`` with the MAP head under
    ``head.*``; ``prefix`` "" for a transformers-5 ``SiglipVisionModel``, which saves no ``vision_model.``."""
    p = prefix
    out = _hf_layers(sd, p)
    out[p + "embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
    out[p + "embeddings.patch_embedding.bias"] = sd["patch_embed.proj.bias"]
    out[p + "embeddings.position_embedding.weight"] = sd["pos_embed"][0]
    out[p + "post_layernorm.weight"], out[p + "post_layernorm.bias"] = sd["norm.weight"], sd["norm.bias"]
    out[p + "head.probe"] = sd["attn_pool.latent"]
    for kind in ("weight", "bias"):
        out[f"{p}head.attention.in_proj_{kind}"] = torch.cat([sd[f"attn_pool.q.{kind}"], sd[f"attn_pool.kv.{kind}"]])
        out[f"{p}head.attention.out_proj.{kind}"] = sd[f"attn_pool.proj.{kind}"]
        out[f"{p}head.layernorm.{kind}"] = sd[f"attn_pool.norm.{kind}"]
        out[f"{p}head.mlp.fc1.{kind}"] = sd[f"attn_pool.mlp.fc1.{kind}"]
        out[f"{p}head.mlp.fc2.{kind}"] = sd[f"attn_pool.mlp.fc2.{kind}"]
    return out


def hf_dinov2(sd: SD, *, registers: bool) -> SD:
    """transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel``."""
    orig = dinov2_original(sd, registers=registers)
    out: SD = {
        "embeddings.cls_token": orig["cls_token"],
        "embeddings.mask_token": orig["mask_token"],
        "embeddings.position_embeddings": orig["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": orig["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": orig["patch_embed.proj.bias"],
        "layernorm.weight": orig["norm.weight"],
        "layernorm.bias": orig["norm.bias"],
    }
    if registers:
        out["embeddings.register_tokens"] = orig["register_tokens"]
    names = {
        "norm1.": "norm1.",
        "norm2.": "norm2.",
        "attn.proj.": "attention.output.dense.",
        "mlp.fc1.": "mlp.fc1.",
        "mlp.fc2.": "mlp.fc2.",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
    }
    for i, rest, v in _blocks(sd):
        base = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), v.chunk(3)):
                out[f"{base}attention.attention.{name}.{kind}"] = part
            continue
        for a, b in names.items():
            if rest.startswith(a):
                out[base + b + rest[len(a) :]] = v
    return out


def _cradio_backbone(sd: SD, num_stale_registers: int) -> SD:
    out = {k: v for k, v in sd.items() if not k.startswith(("feature_normalizer.", "adaptors."))}
    if num_stale_registers:
        dim = sd["patch_generator.pos_embed"].shape[-1]
        out["reg_token"] = sd["patch_generator.pos_embed"].new_zeros(1, num_stale_registers, dim)
    return out


def _mlp2(prefix: str, dim: int, hidden: int, out_dim: int, like: torch.Tensor, seed: int) -> SD:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 0.1).to(like.device) if not like.is_meta else like.new_empty(shape)

    return {
        f"{prefix}pre_norm.0.weight": r(dim),
        f"{prefix}pre_norm.0.bias": r(dim),
        f"{prefix}fc1.weight": r(hidden, dim),
        f"{prefix}fc1.bias": r(hidden),
        f"{prefix}blocks.0.0.weight": r(hidden),
        f"{prefix}blocks.0.0.bias": r(hidden),
        f"{prefix}blocks.0.2.weight": r(hidden, hidden),
        f"{prefix}blocks.0.2.bias": r(hidden),
        f"{prefix}final.0.weight": r(hidden),
        f"{prefix}final.0.bias": r(hidden),
        f"{prefix}final.2.weight": r(out_dim, hidden),
        f"{prefix}final.2.bias": r(out_dim),
    }


def cradio_hf(sd: SD, *, stale_registers: int = 4, summary_idxs=(0, 1, 2), extras: bool = False) -> SD:
    """HF ``model.safetensors`` of C-RADIO: everything under ``radio_model.``; optional PHI-S normaliser
    and one adaptor (``clip``: head_mlp + feat_mlp)."""
    like = sd["patch_generator.pos_embed"]
    dim = like.shape[-1]
    out = {f"radio_model.model.{k}": v for k, v in _cradio_backbone(sd, stale_registers).items()}
    out["radio_model.input_conditioner.norm_mean"] = like.new_zeros(3, 1, 1) + 0.45
    out["radio_model.input_conditioner.norm_std"] = like.new_ones(3, 1, 1) * 0.27
    out["radio_model.summary_idxs"] = torch.tensor(list(summary_idxs), dtype=torch.int64, device=like.device)
    if extras:
        out["radio_model.feature_normalizer.mean"] = like.new_zeros(dim) + 0.1
        out["radio_model.feature_normalizer.tx"] = torch.eye(dim, device=like.device) * 2.0
        out.update(_mlp2("radio_model.adaptors.clip.head_mlp.", dim, 32, 24, like, 1))
        out.update(_mlp2("radio_model.adaptors.clip.feat_mlp.", dim, 32, 20, like, 2))
    return out


def cradio_hub(sd: SD, *, stale_registers: int = 4, extras: bool = True) -> dict:
    """TorchHub ``.pth.tar``: {"args": argparse.Namespace, "state_dict": ..., "state_dict_ema": ...}."""
    like = sd["patch_generator.pos_embed"]
    dim = like.shape[-1]
    state = {f"base_model.{k}": v for k, v in _cradio_backbone(sd, stale_registers).items()}
    state["input_conditioner.norm_mean"] = like.new_zeros(3, 1, 1) + 0.45
    state["input_conditioner.norm_std"] = like.new_ones(3, 1, 1) * 0.27
    if extras:
        state["_feature_normalizer.mean"] = like.new_zeros(dim) + 0.1
        state["_feature_normalizer.tx"] = torch.eye(dim) * 2.0
        state.update(_mlp2("_heads.0.", dim, 32, 24, like, 1))
        state.update(_mlp2("_feature_projections.0.", dim, 32, 20, like, 2))
    stale = {k: torch.zeros_like(v) for k, v in state.items()}  # the non-EMA weights must not be chosen
    return {
        "args": argparse.Namespace(model="vit_base_patch16_224", teachers=[{"name": "clip"}]),
        "state_dict": stale,
        "state_dict_ema": state,
    }
