"""Projection heads from student features to one teacher's feature space (one per teacher and kind).

This module owns head structure: a ``HeadSpec`` says how to build a head, every head keeps the spec it
was built from and exposes ``output_linear``, the Linear that produces its output. An affine map applied
after a head (a target normaliser's inverse, a change of target basis) is folded into that layer by
``compose_affine`` — the one place this algebra is written.

``MLP2`` is C-RADIO's ``v2`` adaptor MLP with its parameter names (``pre_norm.0``, ``fc1``,
``blocks.k.{0,2}``, ``final.{0,2}``), so C-RADIO adaptor weights load into it unchanged.
"""

import copy
from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block


@dataclass(frozen=True)
class HeadSpec:
    """``kind``: ``linear`` (one Linear) or a ``HEAD_VERSIONS`` entry (``v2`` MLP, ``attn``); ``hidden``,
    ``num_inner`` and ``pre_norm`` shape the MLP kinds only."""

    kind: str
    in_dim: int
    out_dim: int
    hidden: int = 0
    num_inner: int = 0
    pre_norm: bool = True

    def build(self) -> nn.Module:
        if self.kind == "linear":
            return LinearHead(self.in_dim, self.out_dim)
        if self.kind not in HEADS:
            raise ValueError(f"unknown head version {self.kind!r}; valid: linear, {', '.join(HEAD_VERSIONS)}")
        return HEADS[self.kind](self)

    @property
    def output_weight_key(self) -> str:
        """State-dict key (under the head's prefix) of the output Linear's weight: its rows are ``out_dim``."""
        return {"linear": "weight", "v2": "final.2.weight", "attn": "mlp.final.2.weight"}[self.kind]

    def as_dict(self) -> Dict[str, object]:
        """For manifests: the MLP-only fields are left out of a ``linear`` spec, ``pre_norm`` when true."""
        fields = asdict(self)
        if self.pre_norm:
            del fields["pre_norm"]
        if self.kind == "linear":
            return {k: fields[k] for k in ("kind", "in_dim", "out_dim")}
        return fields

    @classmethod
    def from_dict(cls, fields: Dict[str, object]) -> "HeadSpec":
        return cls(
            **{k: fields[k] for k in ("kind", "in_dim", "out_dim", "hidden", "num_inner", "pre_norm") if k in fields}
        )


class LinearHead(nn.Linear):
    """One Linear (``use_mlp: false``); state-dict keys ``weight`` and ``bias``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.spec = HeadSpec("linear", in_dim, out_dim)

    @property
    def output_linear(self) -> nn.Linear:
        return self


class MLP2(nn.Module):
    """x [..., in_dim] -> [..., out_dim]: LN-GELU, fc1, ``num_inner`` residual LN-GELU-Linear blocks,
    LN-GELU-Linear out. The final bias starts at zero."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden
        self.pre_norm = nn.Sequential(nn.LayerNorm(spec.in_dim), nn.GELU()) if spec.pre_norm else nn.Identity()
        self.fc1 = nn.Linear(spec.in_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden)) for _ in range(spec.num_inner)
        )
        self.final = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, spec.out_dim))
        nn.init.zeros_(self.final[2].bias)

    @property
    def output_linear(self) -> nn.Linear:
        return self.final[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(self.pre_norm(x))
        for block in self.blocks:
            x = x + block(x)
        return self.final(x)


class AttnHead(nn.Module):
    """Two ViT blocks over the token sequence, then ``MLP2``. x [B, N, in_dim] or [B, in_dim] (one token)."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        # 64-channel heads as in ViT; widths that do not split evenly fall back to one head.
        num_heads = spec.in_dim // 64 if spec.in_dim % 64 == 0 else 1
        self.blocks = nn.Sequential(*(Block(spec.in_dim, num_heads, qkv_bias=True) for _ in range(2)))
        self.mlp = MLP2(HeadSpec("v2", spec.in_dim, spec.out_dim, spec.hidden, spec.num_inner))

    @property
    def output_linear(self) -> nn.Linear:
        return self.mlp.output_linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.mlp(self.blocks(x.unsqueeze(1))).squeeze(1)
        return self.mlp(self.blocks(x))


HEADS = {"v2": MLP2, "attn": AttnHead}
HEAD_VERSIONS = tuple(HEADS)  # ``distill.spatial_mlp_version``: the spec is checked against these


def compose_affine(
    weight: torch.Tensor, bias: torch.Tensor, a: torch.Tensor, shift: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Linear (W', b') computing ``a @ (W x + b) + shift``: W' = a W, b' = a b + shift, in float64 (every
    head's output Linear has a bias).

    weight [C, D], bias [C], a [C', C], shift [C']; the results are float64 on ``weight``'s device.
    """
    device = weight.device
    weight, bias = weight.to(torch.float64), bias.to(device, torch.float64)
    a, shift = a.to(device, torch.float64), shift.to(device, torch.float64)
    return a @ weight, a @ bias + shift


@torch.no_grad()
def fold_affine_into_head(head: nn.Module, a: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    """A copy of ``head`` computing ``a @ head(x) + shift`` (its output Linear re-weighted); ``head`` is kept."""
    if head.output_linear.out_features != a.shape[1]:
        raise ValueError(
            f"cannot fold a {a.shape[1]}-channel affine map into a head with {head.output_linear.out_features} outputs"
        )
    folded = copy.deepcopy(head)
    out = folded.output_linear
    weight, bias = compose_affine(out.weight, out.bias, a, shift)
    out.weight.copy_(weight.to(out.weight.dtype))
    out.bias.copy_(bias.to(out.bias.dtype))
    return folded


def mlp2_from_state_dict(state_dict: dict, prefix: str = "") -> MLP2:
    """An ``MLP2`` shaped like the weights under ``prefix`` (sizes read from fc1 / final.2 / blocks.k)."""
    fc1 = state_dict[f"{prefix}fc1.weight"]
    out = state_dict[f"{prefix}final.2.weight"]
    num_inner = len({k[len(prefix) :].split(".")[1] for k in state_dict if k.startswith(f"{prefix}blocks.")})
    pre_norm = f"{prefix}pre_norm.0.weight" in state_dict
    return MLP2(HeadSpec("v2", fc1.shape[1], out.shape[0], fc1.shape[0], num_inner, pre_norm=pre_norm))
