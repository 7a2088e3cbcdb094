"""Normalised spatial targets, kept continuous across normaliser refreshes.

A PHI-S refresh changes the target basis (new mean, eigenvectors and scale), so without care the loss
jumps every ``refresh_every_n_steps`` while the student catches up. Because both the old and the new map
are affine, the head's output Linear (``output_linear``) can be re-expressed in the new basis at the
moment of the refresh: its teacher-space prediction stays exactly what it was, and only the targets'
coordinates change.
"""

from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from radio.models.heads import compose_affine

Affine = Tuple[torch.Tensor, torch.Tensor]  # (A [C,C], shift [C]): teacher = A @ normalised + shift

# Optimizer state that is a running mean of gradients, and so transforms like a gradient.
FIRST_MOMENTS = ("exp_avg", "momentum_buffer")


@torch.no_grad()
def rebase_linear(linear: nn.Linear, old: Affine, new: Affine, params) -> None:
    """Make the outputs of ``linear`` (a head's ``output_linear``, which has a bias, as every head's does)
    mean in ``new`` normalised coordinates what they meant in ``old``'s.

    y = A_o y'_o + s_o and y'_n = A_n⁻¹ (y − s_n), so the Linear becomes M (W x + b) + A_n⁻¹ (s_o − s_n)
    with M = A_n⁻¹ A_o. Gradients transform as ∂L/∂W' = M⁻ᵀ ∂L/∂W, and so do first moments (Adam's
    ``exp_avg``, SGD's momentum): they are mapped too. Second moments have no exact image and are kept.
    ``params`` (``engine/params.py``) reads and writes the fp32 masters and the working copy under every
    engine; all ranks must call this together.
    """
    a_old, s_old = (t.to(torch.float64) for t in old)
    a_new, s_new = (t.to(torch.float64) for t in new)
    mix = torch.linalg.solve(a_new, a_old)
    weight, bias = compose_affine(
        params.read(linear.weight), params.read(linear.bias), mix, torch.linalg.solve(a_new, s_old - s_new)
    )
    params.write(linear.weight, weight)
    params.write(linear.bias, bias)
    grad_map = torch.linalg.inv(mix).T
    for param in (linear.weight, linear.bias):
        for key in sorted(params.state_keys() & set(FIRST_MOMENTS)):
            moment = params.read_state(param, key)
            if moment is not None:
                params.write_state(param, key, grad_map.to(moment.device) @ moment.to(torch.float64))


class SpatialTargets:
    """Per spatial teacher: observe its features, refresh its normaliser when due, normalise its targets.

    ``refresh`` is the named step that may change trained weights: a due normaliser recomputes its
    transform and the teacher's spatial head is re-based (``rebase_linear``) so its teacher-space prediction
    does not jump. The training step calls it once per optimizer step, on the first micro-batch, before
    any target of the step is normalised — so every gradient of a step is taken in one basis.
    """

    def __init__(self, normalizers: nn.ModuleDict, spatial_heads: nn.ModuleDict, params):
        self.normalizers = normalizers
        self.heads = spatial_heads
        self.params = params
        self._affine: Dict[str, Affine] = {}

    def observe(self, name: str, features: torch.Tensor, *, starts_step: bool) -> None:
        """features: teacher ``name``'s spatial map [B,C,h,w] of one micro-batch (no collective);
        ``starts_step``: the optimizer step's first micro-batch."""
        self.normalizers[name].observe(features, starts_step=starts_step)

    def refresh(self) -> List[str]:
        """Refresh the normalisers that are due and re-base their heads (a collective: every rank calls it
        at every optimizer step). Returns the teachers whose head was re-based."""
        rebased = []
        for name, norm in self.normalizers.items():
            if name not in self._affine and norm.initialized:  # e.g. right after a resume
                self._affine[name] = _copy(norm.inverse_affine())
            if norm.refresh_if_due():
                new = _copy(norm.inverse_affine())
                if name in self._affine:
                    rebase_linear(self.heads[name].output_linear, self._affine[name], new, self.params)
                    rebased.append(name)
                self._affine[name] = new
        return rebased

    def __call__(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """features: teacher spatial map [B,C,h,w] (float32) -> normalised [B,C,h,w]."""
        norm = self.normalizers[name]
        if not norm.initialized:
            # No finite teacher feature seen yet (a teacher that outputs NaN/inf): the term is non-finite
            # and left out like any other (losses/aggregate.py); the statistics never saw the bad rows.
            return torch.full_like(features, float("nan"))
        return norm(features)


def _copy(affine: Affine) -> Affine:
    return affine[0].detach().clone(), affine[1].detach().clone()
