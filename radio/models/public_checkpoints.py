"""Which public checkpoints each registry entry is for (``radio models`` prints it).

An entry fixes the architecture, activation, norms and position-grid resampling; a checkpoint trained
with another (an open_clip GELU CLIP in a QuickGELU entry) loads without a key error and computes
something else, so the entry must be chosen by this table, not by the key names.
"""

import fnmatch
from typing import Optional

# Shell-style name pattern -> the public weights it is for, first match wins.
PUBLIC_CHECKPOINTS = (
    ("c_radio_v3_*", "NVIDIA C-RADIOv3-B/L/H (HF nvidia/C-RADIOv3-*, TorchHub NVlabs/RADIO)"),
    ("c_radio_v2_*", "NVIDIA C-RADIOv2.5-B/L/H (HF nvidia/C-RADIOv2-*, TorchHub NVlabs/RADIO)"),
    (
        "dinov2_vit_*_reg4",
        "DINOv2 with registers (facebookresearch/dinov2 *_reg4 .pth, HF facebook/dinov2-with-registers-*)",
    ),
    ("dinov2_vit_*", "DINOv2 (facebookresearch/dinov2 .pth, HF facebook/dinov2-*, timm *_dinov2.lvd142m)"),
    ("dinov3_*", "DINOv3 (facebookresearch/dinov3 .pth, timm *_dinov3.lvd1689m)"),
    ("siglip2_*", "SigLIP2 (HF google/siglip2-*, timm *_siglip_*.v2_webli)"),
    ("siglip_*", "SigLIP (HF google/siglip-*, big_vision, timm *_siglip_*.webli)"),
    ("clip_vit_*", "OpenAI CLIP, QuickGELU (OpenAI .pt, HF openai/clip-vit-*, open_clip '*-quickgelu' openai)"),
    ("dfn_clip_*", "Apple DFN5B CLIP, QuickGELU (open_clip / HF apple/DFN5B-CLIP-ViT-H-14*)"),
    ("openclip_vit_*", "open_clip GELU CLIPs (ViT-B-16 / L-14 / H-14: laion2b_*, datacomp_*, HF laion/CLIP-*)"),
    ("vit_*_siglip_clipa_*", "NV-CLIP (open_clip SigLIP-CLIPA towers)"),
    ("sam_vit_*", "Segment Anything image encoders (segment_anything sam_vit_{b,l,h}_*.pth, timm samvit_*)"),
    ("tiny_*", "random-init test stand-in of its family (no public weights)"),
    ("demo_*", "random-init quickstart teacher (no public weights)"),
    ("c_radio_tiny_*", "random-init student for tests and the CPU quickstart"),
    ("timm/*", "the timm model of that name (its pretrained tags)"),
)


def public_checkpoints(name: str) -> Optional[str]:
    """What ``name`` is for, or None for an entry the table does not cover."""
    return next((what for pattern, what in PUBLIC_CHECKPOINTS if fnmatch.fnmatchcase(name, pattern)), None)
