"""How each teacher loaded: one console line per teacher (the key lists when a load was not clean) and the
records of ``results_dir/teachers.json``, whose file paths are absolute (``report.html`` is read away from
the folder the run was started in)."""

import os
from typing import Dict, List, Optional

from radio.models.teacher import FrozenTeacher


def teacher_load_records(teachers: Dict[str, FrozenTeacher]) -> List[dict]:
    """Per teacher: file, detected layout, tensor and key counts, what was resampled, dtype, load time."""
    records = []
    for name, teacher in teachers.items():
        report = teacher.load_report
        records.append(
            {
                "name": name,
                "type": teacher.backbone_type,
                "file": _absolute(report.path) if report else None,
                "layout": report.fmt if report else "random init (no checkpoint)",
                "tensors": len(teacher.model.state_dict()),
                "missing": list(report.missing) if report else [],
                "unexpected": list(report.unexpected) if report else [],
                "mismatched": [[k, list(a), list(b)] for k, a, b in report.mismatched] if report else [],
                "ignored": dict(report.dropped) if report else {},
                "notes": list(report.notes) if report else [],
                "dtype": str(teacher.dtype).removeprefix("torch."),
                "compiled": teacher.compiled,
                "fp8_layers": len(teacher.fp8_layers),
                "load_seconds": round(teacher.load_seconds, 3),
                "upsampler": _upsampler_record(teacher),
            }
        )
    return records


def _upsampler_record(teacher: FrozenTeacher):
    """The FeatSharp adaptor's file, layout, factors and what its load noted (None without one)."""
    report = teacher.adaptor_report
    if report is None:
        return None
    adaptor = teacher.adaptor
    grid = adaptor.grid * adaptor.upsample_factor
    return {
        "file": _absolute(report.path),
        "layout": report.fmt,
        "upsample_factor": adaptor.upsample_factor,
        "view_size": adaptor.input_size * adaptor.input_factor,
        "target_grid": [grid, grid],
        "teacher_forwards_per_image": adaptor.teacher_forwards_per_image(),
        "tensors": len(adaptor.state_dict()),
        "ignored": dict(report.dropped),
        "notes": list(report.notes),
    }


def _absolute(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(path) if path else path


def teacher_load_lines(teachers: Dict[str, FrozenTeacher]) -> List[str]:
    """What the main rank prints at start-up."""
    lines = []
    for record, teacher in zip(teacher_load_records(teachers), teachers.values()):
        report = teacher.load_report
        if report is not None and not report.ok:
            lines.append(f"teacher {record['name']} ({record['type']}): loaded non-strictly from\n{report.describe()}")
            continue
        ignored = f", {len(record['ignored'])} file keys ignored" if record["ignored"] else ""
        notes = "".join(f"; {n}" for n in record["notes"])
        if record["compiled"]:
            notes += "; compiled (torch.compile, one graph per input shape)"
        if record["fp8_layers"]:
            notes += f"; {record['fp8_layers']} Linear layers in float8"
        lines.append(
            f"teacher {record['name']} ({record['type']}): {record['tensors']} tensors from {record['file']} "
            f"(layout {record['layout']}{ignored}), {record['dtype']}, {record['load_seconds']:.2f} s{notes}"
        )
        upsampler = record["upsampler"]
        if upsampler is not None:
            grid = "x".join(map(str, upsampler["target_grid"]))
            lines.append(
                f"  FeatSharp {upsampler['upsample_factor']}x upsampler: {upsampler['tensors']} tensors from "
                f"{upsampler['file']} ({upsampler['view_size']} px view, {grid} target grid, "
                f"{upsampler['teacher_forwards_per_image']} teacher forwards per image"
                + "".join(f"; {n}" for n in upsampler["notes"])
                + ")"
            )
    return lines
