"""FeatSharp's refinement block: a DINOv2-style transformer block with local-window ALiBi attention.

Key names follow the FeatSharp checkpoints (``norm1``, ``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``norm2``,
``mlp.w12``, ``mlp.w3``, ``ls2.gamma``). Each token attends only the keys inside the ``window`` x ``window`` square
centred on it (clipped at the grid border). The attention is computed blockwise over the grid (a block of queries
against its block plus a halo of keys), so no N x N score or mask tensor is ever built.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_HEADS = 16
QUERY_BLOCK = 8  # side of the square of queries sharing one gathered key window


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """[num_heads]: heads 2k and 2k+1 share the slope 2^-(k+1)."""
    return torch.tensor([2.0 ** -((h + 2) // 2) for h in range(num_heads)])


def window_pairs(side: int, radius: int) -> int:
    """Number of (query, key) pairs on a side x side grid whose row and column offsets are both within radius."""
    per_axis = sum(min(i + radius, side - 1) - max(i - radius, 0) + 1 for i in range(side))
    return per_axis * per_axis


def _offset_bias(block: int, radius: int, slopes: torch.Tensor) -> tuple:
    """For queries in a block x block square and keys in its (block + 2 radius)^2 window:
    in-window mask [block², K²] and ALiBi bias [heads, block², K²] (-slope·|row offset| on even heads,
    -slope·|column offset| on odd heads)."""
    k = block + 2 * radius
    qr, qc = torch.meshgrid(torch.arange(block), torch.arange(block), indexing="ij")
    kr, kc = torch.meshgrid(torch.arange(k) - radius, torch.arange(k) - radius, indexing="ij")
    dr = (qr.reshape(-1, 1) - kr.reshape(1, -1)).abs()
    dc = (qc.reshape(-1, 1) - kc.reshape(1, -1)).abs()
    inside = (dr <= radius) & (dc <= radius)
    delta = torch.stack([dr if h % 2 == 0 else dc for h in range(slopes.shape[0])]).float()
    return inside, -slopes.reshape(-1, 1, 1) * delta


def local_alibi_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, side: int, window: int, scale: float
) -> torch.Tensor:
    """q, k, v [B, H, side², d] (row-major grid tokens) -> [B, H, side², d].

    softmax over the keys within ``window // 2`` rows and columns of the query of
    ``q·k·scale - slope_h·|offset|`` (the row offset on even heads, the column offset on odd heads).
    """
    b_, h_, n, d = q.shape
    radius = window // 2
    block = min(QUERY_BLOCK, side)
    blocks = -(-side // block)
    padded = blocks * block
    kw = block + 2 * radius
    inside, bias = _offset_bias(block, radius, alibi_slopes(h_))
    inside, bias = inside.to(q.device), bias.to(device=q.device, dtype=q.dtype)

    # Keys on the padded grid are valid when they fall inside the real side x side grid.
    pos = torch.arange(padded + 2 * radius, device=q.device) - radius
    valid_1d = ((pos >= 0) & (pos < side)).float()
    valid_1d = valid_1d.unfold(0, kw, block)  # [blocks, kw]
    valid = (valid_1d[:, None, :, None] * valid_1d[None, :, None, :]).reshape(blocks, blocks, 1, kw * kw) > 0
    mask = inside[None, None] & valid  # [blocks, blocks, block², kw²]

    def grid(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b_, h_, side, side, d)

    qg = F.pad(grid(q), (0, 0, 0, padded - side, 0, padded - side))
    qb = qg.reshape(b_, h_, blocks, block, blocks, block, d).permute(0, 1, 2, 4, 3, 5, 6)
    qb = qb.reshape(b_, h_, blocks, blocks, block * block, d)

    def windows(t: torch.Tensor) -> torch.Tensor:
        tp = F.pad(grid(t), (0, 0, radius, radius + padded - side, radius, radius + padded - side))
        tw = tp.unfold(2, kw, block).unfold(3, kw, block)  # [B, H, blocks, blocks, d, kw, kw]
        return tw.permute(0, 1, 2, 3, 5, 6, 4).reshape(b_, h_, blocks, blocks, kw * kw, d)

    kb, vb = windows(k), windows(v)
    scores = torch.einsum("bhijqd,bhijkd->bhijqk", qb, kb) * scale + bias[:, None, None]
    attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    out = torch.einsum("bhijqk,bhijkd->bhijqd", attn, vb)
    out = out.reshape(b_, h_, blocks, blocks, block, block, d).permute(0, 1, 2, 4, 3, 5, 6)
    # Padded query rows (outside the grid) may have no key and are dropped here.
    return out.reshape(b_, h_, padded, padded, d)[:, :, :side, :side].reshape(b_, h_, n, d)


class LocalAlibiAttention(nn.Module):
    """Multi-head local attention over a side x side token grid.

    Heads are ``dim // 16`` wide; q, k and v are projected to the next power of two (``qkv`` has
    ``16 · 2^ceil(log2(dim / 16)) · 3`` outputs, no bias), the scores use all those dimensions with scale
    ``(dim / 16)^-0.5``, and the output keeps the first ``dim / 16`` of each head before ``proj``.
    """

    def __init__(self, dim: int, side: int, window: int) -> None:
        super().__init__()
        self.head_dim = dim // NUM_HEADS
        self.padded_head_dim = 2 ** math.ceil(math.log2(self.head_dim))
        self.side = side
        self.window = window
        self.qkv = nn.Linear(dim, NUM_HEADS * self.padded_head_dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, side², dim] -> [B, side², dim]."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, NUM_HEADS, self.padded_head_dim).permute(2, 0, 3, 1, 4)
        out = local_alibi_attention(qkv[0], qkv[1], qkv[2], self.side, self.window, self.head_dim**-0.5)
        out = out[..., : self.head_dim].transpose(1, 2).reshape(b, n, NUM_HEADS * self.head_dim)
        return self.proj(out)

    def macs(self, tokens: int) -> int:
        """Multiply-accumulates for one grid of ``tokens`` = side² tokens."""
        dim = NUM_HEADS * self.head_dim
        pairs = window_pairs(self.side, self.window // 2)
        return tokens * dim * self.qkv.out_features + 2 * pairs * NUM_HEADS * self.padded_head_dim + tokens * dim * dim


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``a, b`` the halves of ``w12(x)``."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def swiglu_hidden(dim: int) -> int:
    """FeatSharp's SwiGLU width for a block of width ``dim`` (mlp ratio 4, two thirds, rounded up to 8)."""
    return (int(dim * 4 * 2 / 3) + 7) // 8 * 8


class RefineBlock(nn.Module):
    """Pre-norm block of width ``dim`` narrowing to ``out_dim``: x + ls1(attn(norm1(x))), then the first
    ``out_dim`` channels + ls2(mlp(norm2(x))). ``layer_norm`` False: both norms are the identity (``no-ln``)."""

    def __init__(self, dim: int, out_dim: int, side: int, window: int, layer_norm: bool) -> None:
        super().__init__()
        if dim % NUM_HEADS:
            raise ValueError(f"FeatSharp block width {dim} is not a multiple of {NUM_HEADS} heads")
        norm = nn.LayerNorm if layer_norm else (lambda _: nn.Identity())
        self.norm1 = norm(dim)
        self.attn = LocalAlibiAttention(dim, side, window)
        self.ls1 = LayerScale(dim)
        self.norm2 = norm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim), out_dim)
        self.ls2 = LayerScale(out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, dim] -> [B, N, out_dim]."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x[..., : self.out_dim] + self.ls2(self.mlp(self.norm2(x)))

    def macs(self, tokens: int) -> int:
        w12, w3 = self.mlp.w12, self.mlp.w3
        return self.attn.macs(tokens) + tokens * (w12.in_features * w12.out_features + w3.in_features * w3.out_features)
