"""C-RADIO vision transformer: timm blocks behind a cropped-position-embedding (CPE) patch generator.

State-dict names follow the public C-RADIO backbone layout (``patch_generator.embedder.weight``,
``patch_generator.pos_embed``, ``patch_generator.cls_token.token``, ``blocks.N.*`` with layer scale
``ls1.grandma``) so the same loader reads C-RADIO releases and our own exports.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block

from radio.models.vitdet import window_attention_block, windowed_block_mask

# CPE training crop: area scale in [CPE_MIN_SCALE**2, 1], aspect ratio in [3/4, 4/3], and the whole
# position encoding of a sample dropped with this probability (C-RADIO's recipe).
CPE_MIN_SCALE = math.sqrt(0.1)
CPE_MAX_LOG_ASPECT = math.log(4 / 3)
CPE_POS_DROPOUT = 0.1


@dataclass
class StudentOutput:
    """``cls_tokens`` [B, K, C]: every CLS (summary) slot, registers excluded.
    ``spatial`` [B, C, H/p, W/p]: patch tokens at the actual input size."""

    cls_tokens: torch.Tensor
    spatial: torch.Tensor


class GrandmaLayerScale(nn.Module):
    """Per-channel residual scale (timm's ``LayerScale``); C-RADIO names the parameter ``grandma``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.grandma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.grandma


class ClsToken(nn.Module):
    """``token`` [num_cls_tokens + num_registers, C]: summary slots first, then registers."""

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(num_tokens, dim) * dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, C] -> [B, num_tokens + N, C]."""
        return torch.cat([self.token.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)


class PatchGenerator(nn.Module):
    """Image -> [CLS slots, registers, patch tokens + cropped position embedding].

    ``embedder`` is a bias-free Linear over patches flattened in (channel, y, x) order, which is a stride-p
    convolution with its weight reshaped; it runs as that convolution. ``pos_embed`` is a square grid
    covering ``cpe_max_size`` pixels, cropped/resampled to each input's token grid (see ``pos_embed_for``).
    """

    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        cpe_max_size: int,
        num_tokens: int,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid = cpe_max_size // patch_size
        self.align_corners = align_corners
        self.embedder = nn.Linear(3 * patch_size * patch_size, embed_dim, bias=False)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, embed_dim) * embed_dim**-0.5)
        self.cls_token = ClsToken(embed_dim, num_tokens)

    def pos_embed_for(self, batch: int, h: int, w: int) -> torch.Tensor:
        """Position encoding [B or 1, h*w, C] for an h x w token grid.

        Training: each sample bilinearly samples a random crop (scale, aspect, offset) of the grid, and with
        probability ``CPE_POS_DROPOUT`` gets no position encoding at all. Eval: the grid is resized to
        max(h, w) squared and its top-left h x w window is used, so non-square inputs keep square pixels.
        """
        grid = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2).float()
        if self.training:
            dev = grid.device
            scale = torch.empty(batch, 1, 1, device=dev).uniform_(CPE_MIN_SCALE, 1.0)
            aspect = torch.exp(torch.empty(batch, 1, 1, device=dev).uniform_(-CPE_MAX_LOG_ASPECT, CPE_MAX_LOG_ASPECT))
            size_xy = torch.stack([scale * aspect, scale / aspect], dim=-1).clamp(0, 1)  # [B, 1, 1, 2]
            offset_xy = torch.rand(batch, 1, 1, 2, device=dev) * (1 - size_xy)
            lin_y, lin_x = torch.meshgrid(
                torch.linspace(0, 1, h, device=dev), torch.linspace(0, 1, w, device=dev), indexing="ij"
            )
            unit_xy = torch.stack([lin_x, lin_y], dim=-1).unsqueeze(0)  # [1, h, w, 2]
            sample_xy = (unit_xy * size_xy + offset_xy) * 2 - 1
            pos = F.grid_sample(
                grid.expand(batch, -1, -1, -1), sample_xy, mode="bilinear", padding_mode="zeros", align_corners=True
            )
            keep = (torch.rand(batch, 1, 1, 1, device=dev) >= CPE_POS_DROPOUT).to(pos.dtype)
            pos = pos * keep
        else:
            if (h, w) != (self.grid, self.grid):
                side = max(h, w)
                grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=self.align_corners)
            pos = grid[:, :, :h, :w]
        return pos.flatten(2).transpose(1, 2).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """x [B, 3, H, W] (H, W multiples of the patch) -> (tokens [B, K + h*w, C], (h, w))."""
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        weight = self.embedder.weight.reshape(self.embed_dim, 3, p, p)
        patches = F.conv2d(x, weight, stride=p)  # [B, C, h, w]
        h, w = patches.shape[-2:]
        patches = patches.flatten(2).transpose(1, 2) + self.pos_embed_for(x.shape[0], h, w)
        return self.cls_token(patches), (h, w)


class FeatureNormalizer(nn.Module):
    """C-RADIO's released PHI-S normaliser for patch tokens: ``(x - mean) @ tx.T``. mean [C], tx [C, C]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("tx", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] -> [..., C]."""
        return (x - self.mean.to(x.dtype)) @ self.tx.to(x.dtype).T


class RadioAdaptor(nn.Module):
    """A released C-RADIO adaptor: ``head_mlp`` maps a CLS slot, ``feat_mlp`` the patch tokens, to one
    teacher's space (either may be absent)."""

    def __init__(self, head_mlp: Optional[nn.Module], feat_mlp: Optional[nn.Module]) -> None:
        super().__init__()
        self.head_mlp = head_mlp
        self.feat_mlp = feat_mlp


class RadioViT(nn.Module):
    """C-RADIO ViT (no final norm). ``forward(x) -> StudentOutput``; ``features(x)`` gives the raw tokens.

    Args:
        embed_dim, depth, num_heads, mlp_ratio, patch_size: the ViT shape.
        num_cls_tokens: summary slots (CLS tokens); ``num_registers`` further prefix tokens.
        summary_idxs: CLS slots whose concatenation is the model's summary when used as a teacher.
        cpe_max_size: pixels covered by the learned position grid (grid side = cpe_max_size / patch_size).
        init_values: layer-scale init (None: no layer scale).
        cpe_align_corners: ``align_corners`` of the eval-time grid resize (per released checkpoint).

    ``feature_normalizer`` (C-RADIO's PHI-S) and ``adaptors`` (its per-teacher heads) are filled only when a
    release carrying them is loaded as a teacher.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        num_cls_tokens: int = 4,
        num_registers: int = 4,
        summary_idxs: Sequence[int] = (0, 1, 2),
        cpe_max_size: int = 2048,
        init_values: Optional[float] = None,
        drop_path_rate: float = 0.0,
        cpe_align_corners: bool = True,
    ) -> None:
        super().__init__()
        if any(i >= num_cls_tokens for i in summary_idxs):
            raise ValueError(f"summary_idxs {list(summary_idxs)} must index the {num_cls_tokens} CLS tokens")
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_cls_tokens = num_cls_tokens
        self.num_registers = num_registers
        self.num_prefix_tokens = num_cls_tokens + num_registers
        self.summary_idxs = list(summary_idxs)
        self.cpe_max_size = cpe_max_size
        self.patch_generator = PatchGenerator(
            patch_size, embed_dim, cpe_max_size, self.num_prefix_tokens, align_corners=cpe_align_corners
        )
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth, linear
        blocks = []
        for i in range(depth):
            block = Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                drop_path=dpr[i],
                norm_layer=LayerNorm,  # eps 1e-6, as C-RADIO
            )
            if init_values is not None:
                block.ls1 = GrandmaLayerScale(embed_dim, init_values)
                block.ls2 = GrandmaLayerScale(embed_dim, init_values)
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.feature_normalizer: Optional[FeatureNormalizer] = None
        self.adaptors = nn.ModuleDict()
        self.set_vitdet_layout(num_global=4, num_windowed=None)

    def set_vitdet_layout(self, num_global: int, num_windowed: Optional[int]) -> None:
        """Choose which blocks use windowed attention when ``forward`` gets a ``vitdet_window``."""
        self.vitdet_windowed = windowed_block_mask(self.depth, num_global, num_windowed)

    def features(self, x: torch.Tensor, vitdet_window: Optional[int] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """x [B, 3, H, W] -> (tokens [B, K + h*w, C] with K = cls slots + registers, (h, w))."""
        tokens, (h, w) = self.patch_generator(x)
        for block, windowed in zip(self.blocks, self.vitdet_windowed):
            if vitdet_window is not None and windowed:
                tokens = window_attention_block(block, tokens, self.num_prefix_tokens, h, w, vitdet_window)
            else:
                tokens = block(tokens)
        return tokens, (h, w)

    def split(self, tokens: torch.Tensor, hw: Tuple[int, int]) -> StudentOutput:
        """tokens [B, K + h*w, C] -> StudentOutput (cls slots, spatial [B, C, h, w])."""
        h, w = hw
        spatial = tokens[:, self.num_prefix_tokens :].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return StudentOutput(cls_tokens=tokens[:, : self.num_cls_tokens], spatial=spatial)

    def forward(self, x: torch.Tensor, vitdet_window: Optional[int] = None) -> StudentOutput:
        tokens, hw = self.features(x, vitdet_window)
        return self.split(tokens, hw)

    def summary(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """cls_tokens [B, K, C] -> [B, len(summary_idxs) * C], C-RADIO's published summary vector."""
        return cls_tokens[:, self.summary_idxs].flatten(1)
