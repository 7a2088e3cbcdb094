"""The student backbone as a timm ``NaFlexVit`` C-RADIO model.

timm's ``naflexvit_*_radio_v3`` models are C-RADIO's eval-time network exactly: a learned square position
grid, bilinearly resized to max(h, w) squared and cropped top-left for every input size
(``pos_embed_ar_preserving``), one class token followed by register tokens, layer scale, no final norm.
Our student maps onto it with every architecture field passed as a keyword, so the registered name only
has to agree on what a keyword cannot switch off: ``timm.create_model`` drops keywords whose value is None,
so a student without layer scale uses the ViT-H entry (registered without it) and one with layer scale the
ViT-B entry. The CLS slots beyond the first become timm's leading register tokens, so timm's
``forward_features`` returns the same token sequence as ``RadioViT.features``: [CLS slots, registers,
patches].

A classification run's classifier (``AdaptedStudent.classifier``, on CLS slot 0) is timm's ``head``: the
C-RADIO entries pool the class token (``global_pool='token'``) with no final norm and no ``fc_norm``
(``final_norm=False``), which is exactly CLS slot 0 of our norm-free student, so ``model(x)`` gives the run's
logits. Both are passed explicitly so the call does not depend on the entries' defaults.
"""

from typing import Dict

import torch
import torch.nn as nn

from radio.models.cradio import RadioViT

WITH_LAYER_SCALE = "naflexvit_base_patch16_radio_v3"
WITHOUT_LAYER_SCALE = "naflexvit_huge_patch16_radio_v3"


def _has_layer_scale(student: RadioViT) -> bool:
    return hasattr(student.blocks[0].ls1, "grandma")


def timm_model_name(student: RadioViT) -> str:
    return WITH_LAYER_SCALE if _has_layer_scale(student) else WITHOUT_LAYER_SCALE


def timm_model_kwargs(student: RadioViT, img_size: int, num_classes: int = 0) -> Dict[str, object]:
    """Keyword arguments of ``timm.create_model(timm_model_name(student), ...)`` that rebuild ``student``'s shape
    (and, with ``num_classes`` > 0, its classifier as ``head`` on the class token).

    Layer scale comes from the registered name (its init value is replaced by the exported gammas).
    """
    grid = student.patch_generator.grid
    return dict(
        patch_size=student.patch_size,
        embed_dim=student.embed_dim,
        depth=student.depth,
        num_heads=student.num_heads,
        mlp_ratio=student.blocks[0].mlp.fc1.out_features / student.embed_dim,
        reg_tokens=student.num_prefix_tokens - 1,
        pos_embed_grid_size=[grid, grid],
        pos_embed_align_corners=student.patch_generator.align_corners,
        img_size=img_size,
        num_classes=num_classes,
        global_pool="token",
        final_norm=False,
    )


def to_timm_state_dict(student: RadioViT) -> Dict[str, torch.Tensor]:
    """``student``'s weights in NaFlexVit names.

    The patch embedder's rows are reordered from C-RADIO's (channel, y, x) patch flattening to NaFlexVit's
    (y, x, channel); the bias-free embedder gets a zero bias; the [1, g*g, C] position grid becomes
    [1, g, g, C]; the first CLS slot is timm's class token and the remaining prefix tokens its registers.
    """
    p, dim, grid = student.patch_size, student.embed_dim, student.patch_generator.grid
    gen = student.patch_generator
    weight = gen.embedder.weight.detach().reshape(dim, 3, p, p).permute(0, 2, 3, 1).reshape(dim, -1)
    prefix = gen.cls_token.token.detach()
    out = {
        "embeds.proj.weight": weight,
        "embeds.proj.bias": torch.zeros(dim, dtype=weight.dtype),
        "embeds.pos_embed": gen.pos_embed.detach().reshape(1, grid, grid, dim),
        "embeds.cls_token": prefix[None, :1],
        "embeds.reg_token": prefix[None, 1:],
    }
    for key, value in student.blocks.state_dict().items():
        out[f"blocks.{key}".replace(".grandma", ".gamma")] = value.detach()
    return {k: v.contiguous().clone() for k, v in out.items()}


def classifier_to_timm(classifier: nn.Linear) -> Dict[str, torch.Tensor]:
    """The classifier on CLS slot 0 (weight [N, C], bias [N]) as timm's ``head``."""
    return {f"head.{k}": v.detach().contiguous().clone() for k, v in classifier.state_dict().items()}
