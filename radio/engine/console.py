"""The plain progress line: what a run prints once per logging window when the progress bar is off.

With ``logging.progress_bar: false`` (job logs, SLURM, CI) nothing else says during training how far a run
is; this line does, from the window's all-rank values (``engine/metrics.py``, ``MetricsWindow.flush``).
"""

import time
from typing import Callable, Dict, Optional, Sequence


class PlainProgressLog:
    """Formats one line per logging window: step/total, loss, per-teacher losses, img/s, lr, ETA.

    ``start_step``: the step this process started from (a resumed run's ETA counts only its own steps);
    ``clock``: seconds, monotonic (a parameter so tests can fix the time).
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int,
        teacher_names: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_steps, self.start_step = total_steps, start_step
        self.teacher_names = list(teacher_names)
        self.clock = clock
        self.started = clock()

    def line(self, step: int, values: Dict[str, float]) -> str:
        """``values``: the logging window's metrics (``loss/total``, ``loss/<teacher>``, ``images_per_s``,
        ``lr``); a window of skipped steps has no losses and says so."""
        parts = [f"step {step}/{self.total_steps} ({100 * step / max(self.total_steps, 1):.0f}%)"]
        if "loss/total" in values:
            teachers = ", ".join(
                f"{name} {values[f'loss/{name}']:.4g}" for name in self.teacher_names if f"loss/{name}" in values
            )
            parts.append(f"loss {values['loss/total']:.4f}" + (f" ({teachers})" if teachers else ""))
        else:
            parts.append("loss - (every step of the window was skipped as non-finite)")
        if "images_per_s" in values:
            parts.append(f"{values['images_per_s']:.1f} img/s")
        if "lr" in values:
            parts.append(f"lr {values['lr']:.3g}")
        eta = self._eta_seconds(step)
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return " | ".join(parts)

    def _eta_seconds(self, step: int) -> Optional[float]:
        done = step - self.start_step
        if done <= 0:
            return None
        return (self.clock() - self.started) / done * max(self.total_steps - step, 0)


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``42s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
