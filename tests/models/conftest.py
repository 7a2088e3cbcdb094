import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for models_helpers / public_layouts


@pytest.fixture
def save(tmp_path):
    """save(state, name) -> path: .safetensors via safetensors, anything else via torch.save."""
    from safetensors.torch import save_file

    def _save(state, name: str) -> str:
        path = str(tmp_path / name)
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state, path)
        return path

    return _save
