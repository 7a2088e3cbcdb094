"""End-of-run pictures: loss per teacher and the realised data mixture over time."""
import os
from typing import List

from radio.engine.metrics import read_metrics


def write_report(results_dir: str, teacher_names: List[str]) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(results_dir)
    if not rows:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in teacher_names:
        pts = [(r["step"], r[f"loss/{name}"]) for r in rows if r.get(f"loss/{name}") is not None]
        if pts:
            ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("distillation loss per teacher")
    ax.legend()
    path = os.path.join(results_dir, "loss_per_teacher.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    mix_keys = sorted({k for r in rows for k in r if k.startswith("mixture/")})
    if mix_keys:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in mix_keys:
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot(*zip(*pts), label=key.split("/", 1)[1])
        ax.set_xlabel("step")
        ax.set_ylabel("share of samples in the window")
        ax.set_title("realised data mixture")
        ax.set_ylim(0, 1)
        ax.legend()
        path = os.path.join(results_dir, "data_mixture.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
