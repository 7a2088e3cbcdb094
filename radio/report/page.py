"""``report.html``: one self-contained page per run (pictures embedded as base64, so it can be mailed or
opened anywhere): how the run ended, both plots, the mixture requested and realised, the resolved teachers
and how they loaded, and ``radio eval``'s results when there are any."""

import base64
import html
import json
import math
import os
from datetime import datetime
from typing import Dict, List, Optional

from radio.report.dashboards import run_summary
from radio.run.layout import (
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_FILE,
    LOSS_PLOT,
    METRICS_FILE,
    MIXTURE_PLOT,
    REPORT_HTML,
    RUN_STATUS_FILE,
    TEACHERS_FILE,
    read_metrics,
    read_run_status,
)

# Columns of the teachers table: (heading, key in config.yaml's resolved_teachers or teachers.json).
TEACHER_SETTINGS = (
    ("teacher", "name"),
    ("type", "backbone_type"),
    ("mode", "mode"),
    ("loss", "loss_type"),
    ("λ", "loss_lambda"),
    ("input", "input_size"),
    ("summary slot", "summary_token_idx"),
    ("normaliser", "feature_normalizer"),
)
TEACHER_LOADING = (("weights", "file"), ("layout", "layout"), ("dtype", "dtype"), ("notes", "notes"))

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:90%}img{max-width:100%}"
)


def write_report_html(results_dir: str, eval_result: Optional[dict] = None, status: Optional[str] = None) -> str:
    """Writes ``results_dir/report.html``; returns its path. eval_result: ``radio eval``'s result (default:
    the ``eval/eval.json`` in results_dir, when there is one); status: how the run ended (default: its
    ``run_status.json``)."""
    rows = read_metrics(results_dir)
    if eval_result is None:
        eval_result = _read_json(os.path.join(results_dir, EVAL_DIR, EVAL_FILE))
    config = _read_yaml(os.path.join(results_dir, CONFIG_FILE)) or {}
    summary = run_summary(rows, status or read_run_status(results_dir) or "unknown (running, or it failed)")
    run_facts = {"student": _student_name(config), **summary, **run_times(results_dir, rows)}
    parts = [
        f"<h1>{_text(os.path.basename(os.path.abspath(results_dir)))}</h1>",
        f"<p>{_text(os.path.abspath(results_dir))}</p>",
        "<h2>Run</h2>",
        _table(["", ""], [[key, value] for key, value in run_facts.items()]),
        *(_picture(os.path.join(results_dir, file), file) for file in (LOSS_PLOT, MIXTURE_PLOT)),
        _mixture_table(rows),
        "<h2>Teachers</h2>",
        _teachers_table(results_dir, config),
        *_eval_section(eval_result),
    ]
    page = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_text(results_dir)}</title>'
    page += f"<style>{STYLE}</style></head><body>\n" + "\n".join(p for p in parts if p) + "\n</body></html>\n"
    path = os.path.join(results_dir, REPORT_HTML)
    tmp = os.path.join(results_dir, f".{REPORT_HTML}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


def _mixture_table(rows: List[dict]) -> str:
    """Requested share (the newest row's) and realised share over all windows, weighted by their images."""
    sources = list(dict.fromkeys(k.split("/", 1)[1] for r in rows for k in r if k.startswith("mixture/")))
    if not sources:
        return ""
    images = [r.get("images") or 1.0 for r in rows]
    body = []
    for source in sources:
        realised = [(n, r[f"mixture/{source}"]) for n, r in zip(images, rows) if r.get(f"mixture/{source}") is not None]
        requested = next((r[k] for r in reversed(rows) if (k := f"mixture_requested/{source}") in r), None)
        share = math.fsum(n * v for n, v in realised) / math.fsum(n for n, _ in realised) if realised else None
        body.append([source, requested, share])
    return _table(["source", "requested share", "realised share (all windows)"], body)


def run_times(results_dir: str, rows: List[dict]) -> Dict[str, Optional[str]]:
    """When the run ended (the newer of ``run_status.json`` and the last ``metrics.jsonl`` row; while it runs:
    that row) and how long it trained: the logging windows' time summed (images / images_per_s each; start-up
    and the downtime between restarts left out), and the start of training that makes for a run that never
    restarted."""
    trained = math.fsum(r["images"] / r["images_per_s"] for r in rows if r.get("images") and r.get("images_per_s"))
    written = [os.path.join(results_dir, file) for file in (RUN_STATUS_FILE, METRICS_FILE)]
    ended = max((os.path.getmtime(path) for path in written if os.path.isfile(path)), default=None)
    return {
        "started": _date(ended - trained) if ended is not None and trained else None,
        "ended": _date(ended) if ended is not None else None,
        "training time": _duration(trained) if trained else None,
    }


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(sep=" ", timespec="seconds")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d} (h:mm:ss)"


def _student_name(config: dict) -> Optional[str]:
    model = config.get("model") or {}
    if config.get("task") == "detection":
        return f"{model.get('family')} / {model.get('backbone')}"
    return (model.get("backbone") or {}).get("type")


def _detection_teacher_table(records: List[dict]) -> str:
    """A detection run's teacher as ``teachers.json`` records it (``radio/detection/task.py``)."""
    if not records:
        return "<p>No teacher (the detection loss alone).</p>"
    columns = ["name", "type", "file", "layout", "dtype", "tensors", "copied_into_student"]
    return _table(columns, [[record.get(key) for key in columns] for record in records])


def _teachers_table(results_dir: str, config: dict) -> str:
    records = _read_json(os.path.join(results_dir, TEACHERS_FILE)) or []
    if config.get("task") == "detection":
        return _detection_teacher_table(records)
    loading = {t["name"]: t for t in records}
    teachers = config.get("resolved_teachers") or []
    if not teachers:
        return "<p>No teachers (a label-only run).</p>" if config else "<p>No config.yaml in this folder.</p>"
    launch_dir = _launch_dir(results_dir, config)
    columns = TEACHER_SETTINGS + TEACHER_LOADING
    body = []
    for teacher in teachers:
        values = {**loading.get(teacher["name"], {}), **teacher}
        if values.get("file") and launch_dir:  # an older teachers.json: the path as the spec gave it
            values["file"] = os.path.join(launch_dir, values["file"])
        body.append([values.get(key) for _, key in columns])
    return _table([heading for heading, _ in columns], body)


def _launch_dir(results_dir: str, config: dict) -> Optional[str]:
    """The folder the run was started from, where its config's relative paths point, when its
    ``results_dir`` was relative (``quickstart_out/results`` in ``/home/me/quickstart_out/results``);
    None when it was absolute (teachers.json then has absolute paths too: ``radio/run/teacher_report.py``)."""
    given = config.get("results_dir")
    if not given or os.path.isabs(given):
        return None
    here, given = os.path.abspath(results_dir), os.path.normpath(given)
    return here[: -len(given)].rstrip(os.sep) or os.sep if here.endswith(os.sep + given) else None


def _eval_section(result: Optional[dict]) -> List[str]:
    if not result:
        return []
    parts = ["<h2>Evaluation</h2>", f"<p>checkpoint: {_text(result.get('checkpoint'))}</p>"]
    if "knn" in result:
        knn, options = result["knn"], result.get("options") or {}
        parts.append(
            _table(
                ["kNN top-1", "k", "temperature", "train images", "val images", "train folder", "val folder"],
                [
                    [knn["top1"], knn["k"], knn["temperature"], knn["train_images"], knn["val_images"]]
                    + [options.get("knn_train"), options.get("knn_val")]
                ],
            )
        )
    classification = result.get("classification")
    if classification:
        scored = [who for who in ("student", "teacher") if who in classification]
        body = [
            [who, classification[who]["top1"], classification[who]["top5"], classification[who]["images"]]
            for who in scored
        ]
        k = classification[scored[0]].get("top5_k", 5) if scored else 5  # top-5, or top-N with fewer classes
        parts.append(_table(["classifier", "top-1", f"top-{k}", "images"], body))
        if classification.get("teacher_skipped"):
            parts.append(f"<p>teacher accuracy not measured: {_text(classification['teacher_skipped'])}</p>")
        if classification.get("confusion_png"):
            parts.append(_picture(classification["confusion_png"], "student: confusion matrix"))
    if "fidelity" in result and not result["fidelity"] and not result.get("fidelity_not_measured"):
        parts.append("<p>fidelity: no teachers in this run</p>")
    elif "fidelity" in result:
        body = [[name, s.get("summary"), s.get("spatial"), s.get("images")] for name, s in result["fidelity"].items()]
        body += [
            [name, None, None, f"not measured: {why}"] for name, why in result.get("fidelity_not_measured", {}).items()
        ]
        parts.append(_table(["teacher", "summary cosine", "spatial cosine", "images"], body))
    if result.get("pca_png"):
        parts.append(_picture(result["pca_png"], "student features: first 3 PCA components"))
    parts += _detection_section(result)
    return parts


def _detection_section(result: dict) -> List[str]:
    """A detection run's COCO metrics per val source and model, and its held-out losses."""
    metrics = ["mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"]
    body = [
        [source, who, *[scores[who].get(k) for k in metrics], scores.get("images")]
        for source, scores in result.get("detection", {}).items()
        for who in ("student", "teacher")
        if who in scores
    ]
    if not body:
        return []
    parts = [_table(["val source", "model", *metrics, "images"], body)]
    losses = [
        [source, key, value] for source, terms in result.get("held_out", {}).items() for key, value in terms.items()
    ]
    if losses:
        parts.append(_table(["val source", "held-out loss (per image)", "value"], losses))
    return parts


def _table(headings: List[str], body: List[list]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in headings)
    lines = ["".join(f"<td>{_cell(v)}</td>" for v in row) for row in body]
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{line}</tr>" for line in lines) + "</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, list):
        return "<br>".join(_text(v) for v in value)
    return "-" if value is None else _text(value)


def _text(value) -> str:
    return html.escape(str(value))


def _picture(path: str, caption: str) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    caption = _text(caption)
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_yaml(path: str) -> Optional[Dict]:
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
