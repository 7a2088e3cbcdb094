"""Normalised spatial targets, kept continuous across normaliser refreshes.

A PHI-S refresh changes the target basis (new mean, eigenvectors and scale), so without care the loss
jumps every ``refresh_every_n_steps`` while the student catches up. Because both the old and the new map
are affine, the head's last Linear layer can be re-expressed in the new basis at the moment of the refresh:
its teacher-space prediction stays exactly what it was, and only the targets' coordinates change.
"""

from typing import Dict, Tuple

import torch
import torch.nn as nn

Affine = Tuple[torch.Tensor, torch.Tensor]  # (A [C,C], shift [C]): teacher = A @ normalised + shift


def last_linear(head: nn.Module) -> nn.Linear:
    """The layer that produces a head's output (MLP2 ``final.2``, AttnHead ``mlp.final.2``, or a Linear)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(head).__name__} has no Linear layer")
    return linears[-1]


# Optimizer state that is a running mean of gradients, and so transforms like a gradient.
FIRST_MOMENTS = ("exp_avg", "momentum_buffer")


@torch.no_grad()
def rebase_linear(linear: nn.Linear, old: Affine, new: Affine, params) -> None:
    """Make ``linear``'s outputs mean in ``new`` normalised coordinates what they meant in ``old``'s.

    y = A_o y'_o + s_o and y'_n = A_n⁻¹ (y − s_n), so W ← M W and b ← A_n⁻¹ (A_o b + s_o − s_n) with
    M = A_n⁻¹ A_o. Gradients transform as ∂L/∂W' = M⁻ᵀ ∂L/∂W, and so do first moments (Adam's ``exp_avg``,
    SGD's momentum): they are mapped too. Second moments have no exact image and are kept. ``params``
    (``engine/params.py``) reads and writes the fp32 masters and the working copy under every engine; all
    ranks must call this together.
    """
    a_old, s_old = (t.to(torch.float64) for t in old)
    a_new, s_new = (t.to(torch.float64) for t in new)
    mix = torch.linalg.solve(a_new, a_old)
    grad_map = torch.linalg.inv(mix).T
    weight = params.read(linear.weight).to(torch.float64)
    device = weight.device
    mix, grad_map, a_new, a_old = mix.to(device), grad_map.to(device), a_new.to(device), a_old.to(device)
    params.write(linear.weight, mix @ weight)
    if linear.bias is not None:
        bias = params.read(linear.bias).to(torch.float64)
        params.write(linear.bias, torch.linalg.solve(a_new, a_old @ bias + (s_old - s_new).to(device)))
    for param in [linear.weight] + ([linear.bias] if linear.bias is not None else []):
        for key in sorted(params.state_keys() & set(FIRST_MOMENTS)):
            moment = params.read_state(param, key)
            if moment is not None:
                params.write_state(param, key, grad_map.to(moment.device) @ moment.to(torch.float64))


class SpatialTargets:
    """Per teacher: observe features, refresh the normaliser when due, return normalised targets.

    A refresh re-bases the teacher's spatial head (``rebase_linear``) before the targets of that
    micro-batch are used; refreshes fall on the first micro-batch of an optimizer step (the schedule in
    ``losses/online_stats.py``), so every gradient of a step is taken in one basis.
    """

    def __init__(self, normalizers: nn.ModuleDict, spatial_heads: nn.ModuleDict, params):
        self.normalizers = normalizers
        self.heads = spatial_heads
        self.params = params
        self._affine: Dict[str, Affine] = {}

    def __call__(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """features: teacher spatial map [B,C,h,w] (float32) -> normalised [B,C,h,w]."""
        norm = self.normalizers[name]
        if name not in self._affine and norm.initialized:  # e.g. right after a resume
            self._affine[name] = _copy(norm.inverse_affine())
        if norm.update(features):
            new = _copy(norm.inverse_affine())
            if name in self._affine:
                rebase_linear(last_linear(self.heads[name]), self._affine[name], new, self.params)
            self._affine[name] = new
        if not norm.initialized:
            # No finite teacher feature seen yet (a teacher that outputs NaN/inf): the term is non-finite
            # and left out like any other (losses/aggregate.py); the statistics never saw the bad rows.
            return torch.full_like(features, float("nan"))
        return norm(features)


def _copy(affine: Affine) -> Affine:
    return affine[0].detach().clone(), affine[1].detach().clone()
