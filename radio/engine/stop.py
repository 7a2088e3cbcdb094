"""Stopping a run so that it can continue: signals, a stop file, the launcher going away.

A stop is requested by any of
- SIGTERM, SIGINT or SIGUSR1 to any rank (SLURM pre-emption, ``kill``, Ctrl-C, torchrun forwarding the
  signal it got); DataLoader workers ignore these signals (``data/loader.py``), so only the training
  processes decide;
- a file named ``STOP`` in ``results_dir`` (for clusters that signal only the batch shell; its trap can
  ``touch`` it), removed once the stop checkpoint is written;
- the launcher that started the ranks exiting (``accelerate launch`` killed by a signal it does not
  forward): its orphaned ranks notice and stop instead of training on unattended.

The request is honoured at the next optimizer-step boundary on every rank together (one all-reduce): a
checkpoint is written and the process exits with ``EXIT_STOPPED``. Handlers are installed before anything
heavy is imported, so a request during start-up is kept too. Exit statuses: ``EXIT_FINISHED`` (0),
``EXIT_USER_ERROR`` (2, a message says what to fix), ``EXIT_STOPPED`` (75, sysexits' "temporary failure":
run the same command again to resume).
"""

import os
import signal
import time
from typing import Optional

from radio.run.layout import STOP_FILE

EXIT_FINISHED = 0
EXIT_USER_ERROR = 2
EXIT_STOPPED = 75
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class StopRequest:
    def __init__(self):
        self.signal_name: Optional[str] = None
        self.started = time.time()
        # Ranks started by a launcher (torchrun / accelerate launch) watch it; a plain process does not, so
        # `nohup radio distill ... &` keeps running after its shell exits.
        self._launcher = os.getppid() if "LOCAL_RANK" in os.environ else None
        self._previous = {}
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner's worker thread)
                pass

    def _handle(self, signum, frame) -> None:
        if self.signal_name and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal_name = signal.Signals(signum).name

    def reason(self, results_dir: str) -> Optional[str]:
        """Why this process wants to stop, or None."""
        if self.signal_name:
            return self.signal_name
        if os.path.exists(os.path.join(results_dir, STOP_FILE)):
            return f"{STOP_FILE} file"
        if self._launcher is not None and os.getppid() != self._launcher:
            return "the launcher exited"
        return None

    def agreed(self, accelerator, results_dir: str) -> bool:
        """True on every rank as soon as any rank wants to stop (a collective)."""
        local = self.reason(results_dir) is not None
        if accelerator.num_processes == 1:
            return local
        import torch

        from radio.distributed import all_reduce_sum_

        flag = torch.tensor([1.0 if local else 0.0], device=accelerator.device)
        return all_reduce_sum_(flag).item() > 0

    def clear_stale_stop_file(self, results_dir: str) -> bool:
        """Remove a STOP file older than this process (left by an earlier stop); True if one was removed."""
        path = os.path.join(results_dir, STOP_FILE)
        try:
            if os.path.getmtime(path) < self.started:
                os.remove(path)
                return True
        except FileNotFoundError:
            pass
        return False

    @staticmethod
    def consume_stop_file(results_dir: str) -> None:
        """After the stop checkpoint: the requeued run must not stop again at its first step."""
        try:
            os.remove(os.path.join(results_dir, STOP_FILE))
        except FileNotFoundError:
            pass

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
