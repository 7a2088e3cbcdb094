"""End-of-run pictures from ``metrics.jsonl``: the loss per teacher with its summary / spatial / logits
terms, and the realised data mixture against the requested one; then ``report.html`` around them
(``radio/report/page.py``)."""

import os
from typing import Dict, List, Tuple

from radio.report.page import write_report_html
from radio.run.layout import LOSS_PLOT, MIXTURE_PLOT, read_metrics

# A teacher's total is solid; its terms (``loss/<teacher>/<kind>``) share its colour in these styles.
KIND_STYLES = {"summary": "--", "spatial": ":", "logits": "-."}
OTHER_KIND_STYLE = "--"
FEW_POINTS = 30  # a series with at most this many points gets markers: a one-point run still shows a dot
LOG_SCALE_SPAN = 10.0  # positive values spanning more than this factor (a decade) get a log y axis

Points = List[Tuple[int, float]]


def write_report(results_dir: str, teacher_names: List[str]) -> List[str]:
    """At the end of a finished run: ``loss_per_teacher.png`` and ``data_mixture.png`` (when
    ``metrics.jsonl`` has rows for them) and ``report.html``; returns the paths written."""
    rows = read_metrics(results_dir)
    written = []
    for file, figure in ((LOSS_PLOT, loss_figure(rows, teacher_names)), (MIXTURE_PLOT, mixture_figure(rows))):
        if figure is not None:
            written.append(_save(figure, os.path.join(results_dir, file)))
    written.append(write_report_html(results_dir, status="finished"))  # run_status.json comes after
    return written


def loss_series(rows: List[dict], teacher_names: List[str]) -> Dict[str, Dict[str, Points]]:
    """name -> kind -> (step, value) points, ``"total"`` for ``loss/<name>``. Names: the teachers in run
    order, then any other logged loss (``label_ce``; the weighted ``total`` last)."""
    found: Dict[str, Dict[str, Points]] = {}
    for row in rows:
        for key, value in row.items():
            parts = key.split("/")
            if parts[0] != "loss" or len(parts) not in (2, 3) or value is None:
                continue
            kind = parts[2] if len(parts) == 3 else "total"
            found.setdefault(parts[1], {}).setdefault(kind, []).append((row["step"], value))
    order = [*teacher_names, *sorted(n for n in found if n not in teacher_names and n != "total"), "total"]
    return {
        name: dict(sorted(found[name].items(), key=lambda item: _kind_rank(item[0]))) for name in order if name in found
    }


def _kind_rank(kind: str) -> tuple:
    """The total, then summary / spatial / logits, then any other kind by name."""
    known = ["total", *KIND_STYLES]
    return (known.index(kind), "") if kind in known else (len(known), kind)


def loss_figure(rows: List[dict], teacher_names: List[str]):
    """One axes: each loss in its colour (the weighted total in black), its terms dashed / dotted; a log y
    axis when the values span more than a decade. None when nothing was logged."""
    series = loss_series(rows, teacher_names)
    if not series:
        return None
    fig, ax = _axes()
    colours = _colours()
    for index, (name, kinds) in enumerate(series.items()):
        colour = "black" if name == "total" else colours[index % len(colours)]
        label = "total (weighted sum)" if name == "total" else name
        for kind, points in kinds.items():
            style = "-" if kind == "total" else KIND_STYLES.get(kind, OTHER_KIND_STYLE)
            _line(ax, points, label if kind == "total" else f"{name} {kind}", colour, style)
    values = [v for kinds in series.values() for points in kinds.values() for _, v in points]
    if min(values) > 0 and max(values) / min(values) > LOG_SCALE_SPAN:
        ax.set_yscale("log")
    styles = ", ".join(f"{kind} {style}" for kind, style in KIND_STYLES.items())
    _finish(ax, f"distillation loss per teacher (total solid; terms: {styles})", "loss")
    return fig


def mixture_figure(rows: List[dict]):
    """Each source's realised share per logging window (solid) and its requested share (dashed, same
    colour). None when no mixture was logged."""
    sources = list(dict.fromkeys(k.split("/", 1)[1] for r in rows for k in r if k.startswith("mixture/")))
    if not sources:
        return None
    fig, ax = _axes()
    colours = _colours()
    for index, source in enumerate(sources):
        colour = colours[index % len(colours)]
        _line(ax, _points(rows, f"mixture/{source}"), f"{source} realised", colour, "-")
        _line(ax, _points(rows, f"mixture_requested/{source}"), f"{source} requested", colour, "--")
    ax.set_ylim(0, 1)
    _finish(ax, "data mixture: realised (solid) and requested (dashed)", "share of samples in the window")
    return fig


def _points(rows: List[dict], key: str) -> Points:
    return [(r["step"], r[key]) for r in rows if r.get(key) is not None]


def _line(ax, points: Points, label: str, colour, style: str) -> None:
    if not points:
        return
    marker = "o" if len(points) <= FEW_POINTS else None
    ax.plot(*zip(*points), linestyle=style, color=colour, marker=marker, markersize=4, label=label)


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5))


def _colours() -> list:
    import matplotlib.pyplot as plt

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _finish(ax, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.figure.tight_layout()


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
