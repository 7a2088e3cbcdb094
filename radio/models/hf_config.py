"""A checkpoint's own record of its activation, when it has one, held against the chosen registry entry.

Strict key checks cannot see activations: an open_clip GELU CLIP loads into a QuickGELU entry without a
missing key and computes something else. A transformers ``save_pretrained`` folder records the activation
in ``config.json`` (``hidden_act``, or ``vision_config.hidden_act``); when it is there and contradicts the
entry, the load is refused naming both.
"""

import json
import os
from typing import Optional

import torch.nn as nn

from radio.errors import CheckpointError

# transformers' ``hidden_act`` names -> the activation they compute.
_HF_ACTIVATIONS = {
    "quick_gelu": "QuickGELU",
    "gelu": "GELU (exact)",
    "gelu_pytorch_tanh": "GELU (tanh approximation)",
    "gelu_new": "GELU (tanh approximation)",
    "gelu_fast": "GELU (tanh approximation)",
}


def entry_activation(model: nn.Module) -> Optional[str]:
    """The MLP activation of a ViT-shaped model, in ``_HF_ACTIVATIONS``' terms (None: not a ViT)."""
    blocks = getattr(model, "blocks", None)
    act = getattr(getattr(blocks[0], "mlp", None), "act", None) if blocks else None
    name = type(act).__name__
    if name == "QuickGELU":
        return "QuickGELU"
    if name == "GELUTanh" or getattr(act, "approximate", None) == "tanh":
        return "GELU (tanh approximation)"
    if name == "GELU":
        return "GELU (exact)"
    return None


def recorded_activation(checkpoint_path: str) -> Optional[str]:
    """The activation ``config.json`` beside the checkpoint records, if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    vision = config.get("vision_config")
    hidden_act = config.get("hidden_act") or (vision.get("hidden_act") if isinstance(vision, dict) else None)
    return _HF_ACTIVATIONS.get(hidden_act) if isinstance(hidden_act, str) else None


def check_activation(model: nn.Module, backbone_type: str, checkpoint_path: str) -> None:
    """``CheckpointError`` when the checkpoint's ``config.json`` names another activation than the entry's."""
    recorded, ours = recorded_activation(checkpoint_path), entry_activation(model)
    if recorded and ours and recorded != ours:
        raise CheckpointError(
            f"{checkpoint_path}: its config.json says the model uses {recorded}, but {backbone_type!r} computes "
            f"{ours}; the weights would load and compute something else. Pick the entry of that family "
            "(`radio models` lists which public checkpoints each entry is for)."
        )
