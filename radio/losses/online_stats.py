"""Online feature statistics shared by the feature normalisers (PHI-S, per-channel standardisation).

Statistics are float64 running sums. Each rank accumulates the sums of its own batches as *pending*
sums; at every refresh the pending sums of all ranks are all-reduced (one collective) and added to the
*total* sums, from which the transform is recomputed, so every rank holds the same transform.

``observe`` adds a micro-batch's features; ``refresh_if_due`` is called once per optimizer step, on its
first micro-batch, so every gradient of a step is taken in one target basis. Schedule, in optimizer
steps (1-based): on the first step that brings data (targets are normalised from the very first step),
then every ``refresh_every_n_steps`` steps after it (steps 1, 1 + n, 1 + 2n ...), and a last time on step
``freeze_after_steps + 1`` from the first ``freeze_after_steps`` steps' statistics, after which the
statistics and the transform stay fixed. All sums, counters and the transform are buffers, so
``state_dict()`` carries them into checkpoints.
"""

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from radio.distributed import all_reduce_sum_


def feature_rows(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Feature vectors as rows: [N, C] as is, [B, C, h, w] -> [B·h·w, C], one row per token."""
    if features.dim() == 2:
        rows = features
    elif features.dim() == 4:
        rows = features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])
    else:
        raise ValueError(f"features must be [N, C] or [B, C, h, w], got {tuple(features.shape)}")
    if rows.shape[-1] != dim:
        raise ValueError(f"normaliser was built for {dim} channels, got features of shape {tuple(features.shape)}")
    return rows


def _apply_rows(y: torch.Tensor, fn) -> torch.Tensor:
    """Apply a [N, C] -> [N, C] map to [N, C] or [B, C, h, w] input, keeping the layout."""
    if y.dim() == 4:
        b, c, h, w = y.shape
        rows = fn(y.flatten(2).transpose(1, 2).reshape(-1, c))
        return rows.reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
    return fn(y)


class OnlineFeatureNormalizer(nn.Module):
    """Base class: an affine feature map y' = f(y) whose parameters come from online statistics.

    Subclasses declare their running sums in ``stat_shapes`` and implement ``_accumulate``,
    ``_recompute``, ``_forward_rows``, ``inverse_affine``.
    """

    def __init__(self, dim: int, refresh_every_n_steps: int = 100, freeze_after_steps: Optional[int] = None):
        super().__init__()
        if refresh_every_n_steps < 1:
            raise ValueError(f"refresh_every_n_steps must be >= 1, got {refresh_every_n_steps}")
        if freeze_after_steps is not None and freeze_after_steps < 1:
            raise ValueError(f"freeze_after_steps must be >= 1 or None, got {freeze_after_steps}")
        self.dim = dim
        self.refresh_every_n_steps = refresh_every_n_steps
        self.freeze_after_steps = freeze_after_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.int64))
        # Host copies of the two counters: reading a GPU buffer every step would stall the device.
        self._steps, self._refreshes = 0, 0
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_counters())
        for name, shape in self.stat_shapes().items():
            self.register_buffer(f"total_{name}", torch.zeros(shape, dtype=torch.float64))
            self.register_buffer(f"pending_{name}", torch.zeros(shape, dtype=torch.float64))

    # -- subclass interface -------------------------------------------------------------------------
    def stat_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Running sums (besides ``count``): name -> shape."""
        return {"count": ()}

    def _accumulate(self, rows: torch.Tensor) -> None:
        """Add one batch of float64 rows [N, C] to the ``pending_*`` sums of ``stat_shapes`` (``count`` is the
        caller's), in place."""
        raise NotImplementedError

    def _recompute(self) -> None:
        """Recompute the transform from the ``total_*`` sums."""
        raise NotImplementedError

    def _forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(A [C, C], shift [C]), float64, such that inverse(y') = A y' + shift."""
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------------------
    def _read_counters(self) -> None:
        self._steps, self._refreshes = int(self.steps), int(self.refreshes)

    @property
    def frozen(self) -> bool:
        """Past the first ``freeze_after_steps`` optimizer steps: their statistics are final."""
        return self.freeze_after_steps is not None and self._steps > self.freeze_after_steps

    @property
    def initialized(self) -> bool:
        return self._refreshes > 0

    @torch.no_grad()
    def observe(self, features: torch.Tensor, *, starts_step: bool) -> None:
        """Add one micro-batch's teacher features ([N, C] or [B, C, h, w]) to this rank's pending sums (no
        collective). ``starts_step``: the first micro-batch of an optimizer step, which counts the step.
        From the freeze point on nothing is added."""
        if starts_step:
            self.steps += 1
            self._steps += 1
        if self.frozen:
            return
        rows = feature_rows(features.detach(), self.dim).to(torch.float64)
        # A non-finite teacher vector would poison the running sums for the rest of the run: leave such
        # rows out (zeroed and not counted, which keeps shapes static: no host sync). A row's float64 sum is
        # non-finite when one of its values is; it can overflow only for values whose squares overflow the
        # sums anyway. One reduction instead of an element-wise test: this runs on every micro-batch.
        finite = torch.isfinite(rows.sum(dim=1))
        self._accumulate(rows.masked_fill(~finite[:, None], 0.0))
        self.pending_count.add_(finite.sum())

    @torch.no_grad()
    def refresh_if_due(self) -> bool:
        """Recompute the transform when the schedule says so; True if it was.

        Call once per optimizer step on every rank (a refresh is a collective), after observing the step's
        first micro-batch and before normalising its targets.
        """
        step = self._steps  # 1-based number of the optimizer step in progress
        freeze = self.freeze_after_steps
        if freeze is not None and step > freeze + 1:
            return False
        last = freeze is not None and step == freeze + 1  # from the first `freeze` steps' statistics
        # Until a refresh has seen data (the first step, unless every row was non-finite) every step is
        # due; `initialized` is the same on every rank, so all ranks join the same collectives.
        due = last or not self.initialized or (step - 1) % self.refresh_every_n_steps == 0
        return self.refresh() if due else False

    @torch.no_grad()
    def sync_statistics(self) -> None:
        """All-reduce the pending sums of all ranks into the totals (a collective; call on every rank)."""
        pending = [getattr(self, f"pending_{name}") for name in self.stat_shapes()]
        # One collective for all sums: a flat float64 copy of them.
        reduced = all_reduce_sum_(torch.cat([p.reshape(-1) for p in pending])).split([p.numel() for p in pending])
        for name, p, r in zip(self.stat_shapes(), pending, reduced):
            getattr(self, f"total_{name}").add_(r.reshape(p.shape))
            p.zero_()

    @torch.no_grad()
    def refresh(self) -> bool:
        """Merge all ranks' pending statistics and recompute the transform (False: no data seen yet)."""
        self.sync_statistics()
        if float(self.total_count) == 0:
            return False
        self._recompute()
        self.refreshes += 1
        self._refreshes += 1
        return True

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Normalise y [N, C] or [B, C, h, w] (computed in float64 for float64 input, else float32)."""
        self._check_ready()
        # Targets must not be rounded to bf16 by a surrounding autocast region.
        with torch.autocast(y.device.type, enabled=False):
            return _apply_rows(y, self._forward_rows)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Map normalised features [N, C] or [B, C, h, w] back to teacher space."""
        self._check_ready()
        a, shift = self.inverse_affine()

        def rows_fn(rows: torch.Tensor) -> torch.Tensor:
            dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
            return rows.to(dtype) @ a.to(dtype).T + shift.to(dtype)

        with torch.autocast(y.device.type, enabled=False):
            return _apply_rows(y, rows_fn)

    def _check_ready(self) -> None:
        if not self.initialized:
            raise RuntimeError(
                f"{type(self).__name__} has no statistics yet: observe teacher features and refresh before "
                "normalising (or load a checkpoint that has them)"
            )

    def log_values(self) -> Dict[str, float]:
        """Scalars for metrics: ``count`` (feature vectors seen, all ranks) and ``refreshes``."""
        return {"count": float(self.total_count), "refreshes": float(self.refreshes)}
