"""End-of-run pictures: loss per teacher and the realised data mixture over time."""

import os
from typing import Dict, List

from radio.run.layout import LOSS_PLOT, MIXTURE_PLOT, read_metrics


def write_report(results_dir: str, teacher_names: List[str]) -> List[str]:
    """Writes ``loss_per_teacher.png`` and ``data_mixture.png`` from ``metrics.jsonl``; returns the paths."""
    rows = read_metrics(results_dir)
    if not rows:
        return []
    mixture_keys = sorted({k for r in rows for k in r if k.startswith("mixture/")})
    charts = [
        (
            LOSS_PLOT,
            "distillation loss per teacher",
            "loss",
            {name: f"loss/{name}" for name in teacher_names},
            None,
        ),
        (
            MIXTURE_PLOT,
            "realised data mixture",
            "share of samples in the window",
            {key.split("/", 1)[1]: key for key in mixture_keys},
            (0, 1),
        ),
    ]
    return [
        _plot(os.path.join(results_dir, file), rows, title, ylabel, series, ylim)
        for file, title, ylabel, series, ylim in charts
        if series
    ]


def _plot(path: str, rows: List[dict], title: str, ylabel: str, series: Dict[str, str], ylim) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, key in series.items():
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
