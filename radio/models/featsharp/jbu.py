"""FeatUp's joint bilateral upsampler (JBU) stack, FeatSharp's ``jbu`` input.

Each level bilinearly upsamples the features to the guidance grid and re-filters them with a 7 x 7 kernel per
output pixel: a Gaussian spatial kernel times a softmax range kernel from a small projection of the guidance
RGB. FeatUp applies that kernel with a CUDA op (``AdaptiveConv``): out[b, c, y, x] = sum_{i, j}
kernel[b, y, x, i, j] · padded[b, c, y + i, x + j]; here it is a loop over the 49 offsets, in the same order.
"""

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

KEY_DIM = 32
RADIUS = 3


def prime_factors(n: int) -> List[int]:
    """12 -> [2, 2, 3]; 1 -> []."""
    out, p = [], 2
    while p * p <= n:
        if n % p:
            p += 1
        else:
            n //= p
            out.append(p)
    if n > 1:
        out.append(n)
    return out


def adaptive_conv(padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """padded [B, C, H + k - 1, W + k - 1], kernel [B, H, W, k, k] -> [B, C, H, W] (a per-pixel k x k filter)."""
    _, h, w, k, _ = kernel.shape
    out = torch.zeros(padded.shape[0], padded.shape[1], h, w, dtype=padded.dtype, device=padded.device)
    for i in range(k):
        for j in range(k):
            out += kernel[:, None, :, :, i, j] * padded[:, :, i : i + h, j : j + w]
    return out


class JBULevel(nn.Module):
    """source [B, C, h, w] + guidance [B, 3, H, W] -> [B, C, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.diameter = 2 * RADIUS + 1
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = nn.Sequential(nn.Conv2d(3, KEY_DIM, 1), nn.GELU(), nn.Conv2d(KEY_DIM, KEY_DIM, 1))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.range_alpha = nn.Parameter(torch.tensor(0.0))
        self.spatial_alpha = nn.Parameter(torch.tensor(0.0))

    def spatial_kernel(self, device: torch.device) -> torch.Tensor:
        """[1, 49, 1, 1]: exp(spatial_alpha) · exp(-(x² + y²) / 2σ²) over x, y in linspace(-1, 1, 7)."""
        ticks = torch.linspace(-1, 1, self.diameter, device=device)
        y, x = torch.meshgrid(ticks, ticks, indexing="ij")
        dist2 = x.square() + y.square()
        kernel = torch.exp(-dist2 / (2 * self.sigma_spatial**2))
        return self.spatial_alpha.exp() * kernel.reshape(1, -1, 1, 1)

    def range_kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """guidance [B, 3, H, W] -> [B, 49, H, W]: exp(range_alpha) · softmax over the window of t · <p_n, p>."""
        b, _, h, w = guidance.shape
        proj = self.range_proj(guidance)
        padded = F.pad(proj, [RADIUS] * 4, mode="reflect")
        neighbours = F.unfold(padded, self.diameter).reshape(b, KEY_DIM, self.diameter**2, h, w)
        temp = self.range_temp.exp().clamp(1e-4, 1e4)
        logits = torch.einsum("bcphw,bchw->bphw", neighbours, proj)
        return self.range_alpha.exp() * F.softmax(temp * logits, dim=1)

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        b, _, h, w = guidance.shape
        kernel = self.range_kernel(guidance) * self.spatial_kernel(source.device)
        kernel = kernel / kernel.sum(1, keepdim=True).clamp(1e-7)
        kernel = kernel.permute(0, 2, 3, 1).reshape(b, h, w, self.diameter, self.diameter)
        upsampled = F.interpolate(source, (h, w), mode="bilinear", align_corners=False)
        return adaptive_conv(F.pad(upsampled, [RADIUS] * 4, mode="reflect"), kernel)

    def macs(self, channels: int, pixels: int) -> int:
        taps = self.diameter**2
        return pixels * (3 * KEY_DIM + KEY_DIM * KEY_DIM + KEY_DIM * taps + channels * taps)


class JBUStack(nn.Module):
    """One ``JBULevel`` per prime factor of the upsampling factor; each level sees the guidance average-pooled
    to its output grid. source [B, C, h, w], guidance [B, 3, H, W] -> [B, C, h·f, w·f]."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factors = prime_factors(factor)
        self.ups = nn.ModuleList([JBULevel() for _ in self.factors])

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        for level, factor in zip(self.ups, self.factors):
            h, w = source.shape[-2:]
            source = level(source, F.adaptive_avg_pool2d(guidance, (h * factor, w * factor)))
        return source

    def macs(self, channels: int, side: int) -> int:
        total = 0
        for level, factor in zip(self.ups, self.factors):
            side *= factor
            total += level.macs(channels, side * side)
        return total
