"""Projection heads from student features to one teacher's feature space (one per teacher and kind).

``MLP2`` is C-RADIO's ``v2`` adaptor MLP with its parameter names (``pre_norm.0``, ``fc1``,
``blocks.k.{0,2}``, ``final.{0,2}``), so C-RADIO adaptor weights load into it unchanged.
"""

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

HEAD_VERSIONS = ("v2", "attn")


class MLP2(nn.Module):
    """x [..., in_dim] -> [..., out_dim]: LN-GELU, fc1, ``num_inner`` residual LN-GELU-Linear blocks,
    LN-GELU-Linear out. The final bias starts at zero."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_inner: int = 0, pre_norm: bool = True) -> None:
        super().__init__()
        self.pre_norm = nn.Sequential(nn.LayerNorm(in_dim), nn.GELU()) if pre_norm else nn.Identity()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden)) for _ in range(num_inner)
        )
        self.final = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.final[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(self.pre_norm(x))
        for block in self.blocks:
            x = x + block(x)
        return self.final(x)


class AttnHead(nn.Module):
    """Two ViT blocks over the token sequence, then ``MLP2``. x [B, N, in_dim] or [B, in_dim] (one token)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_inner: int = 0) -> None:
        super().__init__()
        # 64-channel heads as in ViT; widths that do not split evenly fall back to one head.
        num_heads = in_dim // 64 if in_dim % 64 == 0 else 1
        self.blocks = nn.Sequential(*(Block(in_dim, num_heads, qkv_bias=True) for _ in range(2)))
        self.mlp = MLP2(in_dim, hidden, out_dim, num_inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.mlp(self.blocks(x.unsqueeze(1))).squeeze(1)
        return self.mlp(self.blocks(x))


def build_head(version: str, in_dim: int, hidden: int, out_dim: int, num_inner: int) -> nn.Module:
    """Head ``version`` ('v2' | 'attn') mapping [B, N, in_dim] or [B, in_dim] to the same shape with out_dim."""
    if version == "v2":
        return MLP2(in_dim, hidden, out_dim, num_inner)
    if version == "attn":
        return AttnHead(in_dim, hidden, out_dim, num_inner)
    raise ValueError(f"unknown head version {version!r}; valid: {', '.join(HEAD_VERSIONS)}")


def mlp2_from_state_dict(state_dict: dict, prefix: str = "") -> MLP2:
    """An ``MLP2`` shaped like the weights under ``prefix`` (sizes read from fc1 / final.2 / blocks.k)."""
    fc1 = state_dict[f"{prefix}fc1.weight"]
    out = state_dict[f"{prefix}final.2.weight"]
    num_inner = len({k[len(prefix) :].split(".")[1] for k in state_dict if k.startswith(f"{prefix}blocks.")})
    pre_norm = f"{prefix}pre_norm.0.weight" in state_dict
    return MLP2(fc1.shape[1], fc1.shape[0], out.shape[0], num_inner, pre_norm=pre_norm)
