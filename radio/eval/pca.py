"""PCA pictures of spatial features: the first three principal components of the tokens as RGB."""

from typing import Optional

import numpy as np
import torch

# Each component is stretched between these quantiles of its values, so a few outlier tokens do not
# wash out the picture.
_LOW_Q, _HIGH_Q = 0.01, 0.99


def pca_rgb(spatial: torch.Tensor) -> torch.Tensor:
    """spatial [B, C, h, w] -> RGB [B, h, w, 3] in [0, 1].

    One PCA is fitted over all tokens of the batch (so colours are comparable between images); component
    i (by decreasing variance) is channel i, min-max scaled between its 1st and 99th percentile.
    """
    b, c, h, w = spatial.shape
    rows = spatial.detach().float().flatten(2).transpose(1, 2).reshape(-1, c)  # [B*h*w, C]
    rows = rows - rows.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    comps = rows @ vh[:3].T  # [B*h*w, <=3]
    if comps.shape[1] < 3:  # fewer than 3 channels: pad with a constant colour channel
        comps = torch.cat([comps, comps.new_zeros(comps.shape[0], 3 - comps.shape[1])], dim=1)
    low, high = torch.quantile(comps, _LOW_Q, dim=0), torch.quantile(comps, _HIGH_Q, dim=0)
    rgb = ((comps - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    return rgb.reshape(b, h, w, 3)


def save_pca_grid(images: torch.Tensor, rgb: torch.Tensor, path: str, title: Optional[str] = None) -> None:
    """A PNG with two rows: the input images (uint8 [B, 3, S, S]) and their PCA maps (rgb [B, h, w, 3])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        axes[1, i].imshow(rgb[i].cpu().numpy(), interpolation="nearest")
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
