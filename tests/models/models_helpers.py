"""Shared helpers of the model tests."""

import torch

from radio.models.registry import create_model, get_model_info


def distinct_weights(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """Registry model ``name`` with every tensor perturbed, so a key mapped to the wrong tensor (even one
    LayerNorm onto another) changes the output. Biases the public layouts do not store stay zero."""
    torch.manual_seed(seed)
    info = get_model_info(name)
    model = create_model(name, img_size=info.img_size, **kwargs).eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
        if info.summary_proj and "head.bias" in model.state_dict():
            model.head.bias.zero_()  # CLIP projections have no bias
    return model
