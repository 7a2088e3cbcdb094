"""How each teacher loaded: one console line per teacher (the key lists when a load was not clean) and the
records of ``results_dir/teachers.json``."""

from typing import Dict, List

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
                "file": report.path if report else None,
                "layout": report.fmt if report else "random init (no checkpoint)",
                "tensors": len(teacher.model.state_dict()),
                "missing": list(report.missing) if report else [],
                "unexpected": list(report.unexpected) if report else [],
                "mismatched": [[k, list(a), list(b)] for k, a, b in report.mismatched] if report else [],
                "ignored": dict(report.dropped) if report else {},
                "notes": list(report.notes) if report else [],
                "dtype": str(teacher.dtype).removeprefix("torch."),
                "load_seconds": round(teacher.load_seconds, 3),
            }
        )
    return records


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
        lines.append(
            f"teacher {record['name']} ({record['type']}): {record['tensors']} tensors from {record['file']} "
            f"(layout {record['layout']}{ignored}), {record['dtype']}, {record['load_seconds']:.2f} s{notes}"
        )
    return lines
