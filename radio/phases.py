"""Where a training step's time goes: named phases the engine marks, timed only when a benchmark asks.

The engine wraps each part of a step in ``phases.phase(name)``. With ``NO_PHASES`` (the default) that is a
no-op: no clock, no device synchronisation. ``PhaseTimes`` synchronises the device at each phase boundary,
so every phase is charged its own work rather than the queue in front of it, and sums wall time per phase.
Those synchronisations remove the overlap a real step has, so the per-phase numbers explain a step; the
step's speed is measured without them (``tools/bench/step_throughput.py``).
"""

import contextlib
import time
from collections import defaultdict
from typing import ContextManager, Dict

import torch


class NoPhases:
    def phase(self, name: str) -> ContextManager[None]:
        return contextlib.nullcontext()


NO_PHASES = NoPhases()


class PhaseTimes:
    """Wall seconds per phase name, summed over every ``phase`` block since the last ``reset``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: Dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str):
        self._sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - started

    def reset(self) -> None:
        self.seconds.clear()

    def per_step_ms(self, steps: int) -> Dict[str, float]:
        """Milliseconds per optimizer step for each phase, in the order phases first ran."""
        return {name: 1e3 * total / max(steps, 1) for name, total in self.seconds.items()}
