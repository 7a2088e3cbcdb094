"""JAFAR (PaulCouairon/JAFAR) as FeatSharp embeds it: FeatSharp's ``jafar`` input.

An RGB encoder (3x3 conv + two 1x1 residual blocks, 128 channels, 2D RoPE) gives queries at the output grid and
keys at the low-res grid; the keys are modulated (SFT) by an encoding of the L2-normalised low-res features.
The output is the head-averaged attention map of a 4-head ``nn.MultiheadAttention`` applied to the raw low-res
features. JAFAR discards that module's own attention output, so its value and output projections are loaded
(they are part of the checkpoint layout) but do not change the result.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

QK_DIM = 128
HEADS = 4
GROUPS = 8


class ResBlock(nn.Module):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))) with 1x1 convs, no bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, dim)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, dim)
        self.conv2 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(y)))


def encoder(in_dim: int, kernel_size: int) -> nn.Sequential:
    """[B, in_dim, H, W] -> [B, 128, H, W]: a reflect-padded conv, then two residual blocks."""
    conv = nn.Conv2d(in_dim, QK_DIM, kernel_size, padding=kernel_size // 2, padding_mode="reflect", bias=False)
    return nn.Sequential(conv, ResBlock(QK_DIM), ResBlock(QK_DIM))


def encoder_macs(in_dim: int, kernel_size: int, pixels: int) -> int:
    return pixels * (in_dim * QK_DIM * kernel_size**2 + 4 * QK_DIM * QK_DIM)


class RoPE2d(nn.Module):
    """x [B, N, 128] on an h x w grid -> x·cos(θ) + rotate_half(x)·sin(θ), θ = (row, col) / (h - 1, w - 1) @ freqs."""

    def __init__(self) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.zeros(2, QK_DIM))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        rows = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype)
        cols = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype)
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(1, h * w, 2)
        angle = coords @ self.freqs
        x1, x2 = x.chunk(2, dim=-1)
        return x * angle.cos() + torch.cat([-x2, x1], dim=-1) * angle.sin()


class SFTModulation(nn.Module):
    """gamma(features) · groupnorm(keys) + beta(features), 1x1 convs without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(QK_DIM, QK_DIM, 1, bias=False)
        self.beta = nn.Conv2d(QK_DIM, QK_DIM, 1, bias=False)
        self.norm = nn.GroupNorm(GROUPS, QK_DIM, affine=False)

    def forward(self, keys: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.gamma(features) * self.norm(keys) + self.beta(features)


class CrossAttention(nn.Module):
    def __init__(self, value_dim: int) -> None:
        super().__init__()
        self.norm_q = nn.RMSNorm(QK_DIM)
        self.norm_k = nn.RMSNorm(QK_DIM)
        self.norm_v = nn.RMSNorm(value_dim)
        self.attention = nn.MultiheadAttention(QK_DIM, HEADS, vdim=value_dim, batch_first=True)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, Nq, 128], k [B, Nk, 128], v [B, Nk, C] -> [B, Nq, C]: mean over heads of softmax(q_h k_h^T / √32) @ v."""
        att = self.attention
        if att.in_proj_weight is not None:
            wq, wk, _ = att.in_proj_weight.chunk(3)
        else:
            wq, wk = att.q_proj_weight, att.k_proj_weight
        bq, bk, _ = att.in_proj_bias.chunk(3)
        b, nq, _ = q.shape
        head = QK_DIM // HEADS
        qh = F.linear(self.norm_q(q), wq, bq).reshape(b, nq, HEADS, head).transpose(1, 2)
        kh = F.linear(self.norm_k(k), wk, bk).reshape(b, k.shape[1], HEADS, head).transpose(1, 2)
        weights = ((qh * head**-0.5) @ kh.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)
        return weights @ v


class CrossAttentionBlock(nn.Module):
    def __init__(self, value_dim: int) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(value_dim)
        self.conv2d = nn.Conv2d(QK_DIM, QK_DIM, 3, padding=1, bias=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, 128, H, W], k [B, 128, h, w], v [B, C, h, w] -> [B, H·W, C]."""
        tokens = [t.flatten(2).transpose(1, 2) for t in (self.conv2d(q), k, v)]
        return self.cross_attn(*tokens)


class JAFAR(nn.Module):
    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.image_encoder = encoder(3, 3)
        self.key_encoder = encoder(QK_DIM, 1)
        self.query_encoder = encoder(QK_DIM, 1)
        self.norm = nn.GroupNorm(GROUPS, QK_DIM, affine=False)
        self.key_features_encoder = encoder(feat_dim, 1)
        self.cross_decode = CrossAttentionBlock(feat_dim)
        self.sft_key = SFTModulation()
        self.rope = RoPE2d()

    def forward(self, image: torch.Tensor, features: torch.Tensor, out_side: int) -> torch.Tensor:
        """image [B, 3, S, S], features [B, C, h, w] -> [B, C, out_side, out_side]."""
        encoded = self.image_encoder(image)
        b, c, s_h, s_w = encoded.shape
        tokens = self.rope(encoded.flatten(2).transpose(1, 2), s_h, s_w)
        encoded = tokens.transpose(1, 2).reshape(b, c, s_h, s_w)
        queries = self.norm(F.adaptive_avg_pool2d(self.query_encoder(encoded), out_side))
        keys = F.adaptive_avg_pool2d(self.key_encoder(encoded), features.shape[-2:])
        keys = self.sft_key(keys, self.key_features_encoder(F.normalize(features, dim=1)))
        out = self.cross_decode(queries, keys, features)
        return out.transpose(1, 2).reshape(b, features.shape[1], out_side, out_side)


class JafarUpsampler(nn.Module):
    """source [B, C, h, h] + guidance [B, 3, G, G] -> [B, C, h·f, h·f]; the guidance is first resized
    (bilinear) to at most twice the output grid."""

    def __init__(self, feat_dim: int, factor: int) -> None:
        super().__init__()
        self.upsampler = JAFAR(feat_dim)
        self.factor = factor

    def guidance_side(self, guidance_side: int, low_res_side: int) -> int:
        return min(guidance_side, 2 * low_res_side * self.factor)

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        out_side = source.shape[-1] * self.factor
        side = self.guidance_side(guidance.shape[-1], source.shape[-1])
        if guidance.shape[-1] > side:
            guidance = F.interpolate(guidance, size=(side, side), mode="bilinear", align_corners=False)
        return self.upsampler(guidance, source, out_side)

    def macs(self, channels: int, low_res_side: int, guidance_side: int) -> int:
        img = self.guidance_side(guidance_side, low_res_side) ** 2
        lr = low_res_side**2
        hr = (low_res_side * self.factor) ** 2
        return (
            encoder_macs(3, 3, img)
            + 2 * encoder_macs(QK_DIM, 1, img)
            + encoder_macs(channels, 1, lr)
            + 2 * lr * QK_DIM * QK_DIM  # SFT gamma, beta
            + hr * QK_DIM * QK_DIM * 9  # query conv
            + (hr + lr) * QK_DIM * QK_DIM  # q, k projections
            + hr * lr * (QK_DIM + channels)  # scores, weights @ features
        )
