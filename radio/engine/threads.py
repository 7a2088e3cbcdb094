"""How many intra-op threads each training process gives torch (``train.torch_threads``).

torch's default is one thread per core in every process, so several ranks on one node, each with DataLoader
workers, ask for many times the cores there are and crawl (a loaded 2-core machine went from 6 to 73+ img/s
with one thread per process). The default divides the cores this process may use among the node's processes
and their workers: ``cores // (processes · (workers + 1))``, at least 1. ``OMP_NUM_THREADS`` in the
environment, or ``train.torch_threads``, overrides it; a setting that oversubscribes the cores is said.
"""

import os
from typing import Optional, Tuple


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a scheduler such as SLURM restricts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_threads(
    requested: Optional[int], *, cores: int, processes: int, workers: int, environment: Optional[str]
) -> Tuple[int, Optional[str]]:
    """(threads for this process, a note when the node is oversubscribed, else None).

    ``requested``: ``train.torch_threads`` (None or 0: automatic); ``environment``: ``OMP_NUM_THREADS``.
    """
    if requested:
        threads, source = int(requested), "train.torch_threads"
    elif environment and environment.isdigit() and int(environment) > 0:
        threads, source = int(environment), "OMP_NUM_THREADS"
    else:
        return max(1, cores // (processes * (workers + 1))), None
    demand = processes * (threads + workers)
    if demand <= cores:
        return threads, None
    return threads, (
        f"note: {processes} process(es) x ({threads} torch threads from {source} + {workers} DataLoader "
        f"workers) = {demand} busy threads on {cores} cores: expect contention; lower {source} or "
        "dataset.workers (leaving train.torch_threads unset divides the cores automatically)."
    )
