"""SIGTERM / SIGUSR1 (SLURM pre-emption): finish the step, checkpoint, exit."""

import signal

import torch

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)


class StopRequest:
    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner's worker thread)
                pass

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self, accelerator) -> bool:
        """True on every rank as soon as any rank got the signal."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
