"""Random-init teacher weights for the CPU quickstart and tests (no download, clearly labelled)."""

import os

import torch
from safetensors.torch import save_file

from radio.models.registry import create_model, get_model_info


def save_demo_teacher(name: str, path: str, seed: int = 0) -> str:
    """Write seeded random weights of registry model ``name`` to ``path`` (.safetensors) and return it.

    The file loads strictly into ``FrozenTeacher(name, path, ...)``. Its name must contain ``demo`` so
    nobody mistakes it for trained weights.
    """
    if "demo" not in os.path.basename(path) or not path.endswith(".safetensors"):
        raise ValueError(f"demo teacher weights must be a .safetensors file whose name says 'demo': {path}")
    info = get_model_info(name)
    torch.manual_seed(seed)
    model = create_model(name, img_size=info.img_size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata={"radio": "demo teacher, random weights", "model": name, "seed": str(seed)})
    return path
