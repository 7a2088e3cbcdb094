"""``radio export``: a trained run -> timm-loadable backbone + per-teacher adaptors + ``export.json``.

Output folder:
- ``backbone.safetensors``: the student in timm NaFlexVit names (``radio.export.timm_backbone``); for a
  classification run (``dataset.num_classes`` > 0) also its classifier as timm's ``head``, so the written
  ``timm.create_model`` call (``num_classes=N``) gives the run's logits from ``model(x)``.
- ``adaptors/<teacher>.safetensors``: summary and spatial heads, normaliser folded in (``radio.export.adaptors``).
- ``export.json``: the ``timm.create_model`` call (name + kwargs), token layout, input normalisation and
  per-teacher adaptor metadata; ``README.md`` says the same for people.
"""

import json
import os
from typing import Dict, Optional

from safetensors.torch import save_file

from radio.export.adaptors import export_adaptor
from radio.export.timm_backbone import classifier_to_timm, timm_model_kwargs, timm_model_name, to_timm_state_dict
from radio.export.trained_run import load_trained_run

BACKBONE_FILE = "backbone.safetensors"
MANIFEST_FILE = "export.json"


def timm_call(manifest: Dict[str, object], out_dir: str) -> str:
    """The Python line that loads the exported backbone (and classifier head, if any) with timm (absolute file
    path)."""
    backbone = manifest["backbone"]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in backbone["timm_kwargs"].items())
    overlay = dict(
        file=os.path.join(os.path.abspath(out_dir), BACKBONE_FILE),
        mean=tuple(backbone["norm_mean"]),
        std=tuple(backbone["norm_std"]),
        input_size=(3, backbone["img_size"], backbone["img_size"]),
    )
    if "classifier" in backbone:
        # timm drops a file's head whose class count differs from the pretrained config's (0 for C-RADIO).
        overlay["num_classes"] = backbone["classifier"]["num_classes"]
    return (
        f"timm.create_model({backbone['timm_model']!r}, pretrained=True, pretrained_cfg_overlay={overlay!r}, {kwargs})"
    )


def _write_readme(manifest: Dict[str, object], out_dir: str) -> None:
    backbone = manifest["backbone"]
    lines = [
        "# Exported radio student",
        "",
        f"Exported from `{manifest['results_dir']}` (checkpoint `{manifest['checkpoint']}`).",
        "",
        "Backbone (timm >= 1.0.31, NaFlexVit C-RADIO port; offline, no download):",
        "",
        "```python",
        "import timm",
        f"model = {timm_call(manifest, out_dir)}",
        "tokens = model.forward_features(x)  # x normalised with norm_mean/norm_std, [B, 3, H, W], H, W multiples "
        f"of {backbone['timm_kwargs']['patch_size']}",
        "```",
        "",
        f"`tokens` is [B, {backbone['num_prefix_tokens']} + H/p * W/p, C]: {backbone['num_cls_tokens']} CLS (summary) "
        f"slots, {backbone['num_registers']} registers, then the patch tokens (row-major).",
        f"Input normalisation: mean {backbone['norm_mean']}, std {backbone['norm_std']}; trained at "
        f"{backbone['img_size']} px.",
        "",
        *_classifier_lines(backbone),
        "Adaptors (`radio.export.adaptors.load_adaptor(path, export_json['adaptors'][name])`): `summary` maps CLS "
        "slot `summary_token_idx`, `spatial` maps patch tokens, both to the teacher's feature space.",
        "",
    ]
    for name, meta in manifest["adaptors"].items():
        kinds = [k for k in ("summary", "spatial") if k in meta]
        lines.append(f"- `{meta['file']}`: {name} ({meta['type']}, mode {meta['mode']}): {', '.join(kinds)}")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _classifier_lines(backbone: Dict[str, object]) -> list:
    if "classifier" not in backbone:
        return []
    n = backbone["classifier"]["num_classes"]
    return [
        f"Classifier head ({n} classes, timm's `head` on the class token = CLS slot 0): `logits = model(x)` is "
        f"[B, {n}], the trained run's logits.",
        "",
    ]


def export_run(results_dir: str, out_dir: str, checkpoint: Optional[str] = None) -> Dict[str, object]:
    """Write the export of ``results_dir`` (``checkpoint`` or its newest) to ``out_dir``; returns the manifest."""
    run = load_trained_run(results_dir, checkpoint)
    student = run.model.student
    aug = run.cfg.dataset.augmentation
    img_size = int(run.cfg.dataset.img_size)
    classifier = run.model.classifier
    num_classes = classifier.out_features if classifier is not None else 0
    os.makedirs(os.path.join(out_dir, "adaptors"), exist_ok=True)
    weights = to_timm_state_dict(student)
    if classifier is not None:
        weights.update(classifier_to_timm(classifier))
    save_file(
        weights,
        os.path.join(out_dir, BACKBONE_FILE),
        metadata={"format": "timm-naflexvit", "timm_model": timm_model_name(student), "num_classes": str(num_classes)},
    )
    manifest: Dict[str, object] = {
        "results_dir": os.path.abspath(results_dir),
        "checkpoint": os.path.abspath(run.checkpoint_dir),
        "backbone": {
            "file": BACKBONE_FILE,
            "student_type": run.cfg.model.backbone.type,
            "timm_model": timm_model_name(student),
            "timm_kwargs": timm_model_kwargs(student, img_size, num_classes),
            "img_size": img_size,
            "norm_mean": list(aug.norm_mean),
            "norm_std": list(aug.norm_std),
            "embed_dim": student.embed_dim,
            "num_cls_tokens": student.num_cls_tokens,
            "num_registers": student.num_registers,
            "num_prefix_tokens": student.num_prefix_tokens,
            "summary_idxs": list(student.summary_idxs),
        },
        "adaptors": {},
    }
    if classifier is not None:
        manifest["backbone"]["classifier"] = {
            "num_classes": num_classes,
            "keys": sorted(classifier_to_timm(classifier)),
            "input": "CLS slot 0 (timm's class token; global_pool='token', no final norm)",
        }
    model = run.model
    for t in run.teachers:
        summary = model.summary_heads[t.name] if t.name in model.summary_heads else None
        spatial = model.spatial_heads[t.name] if t.name in model.spatial_heads else None
        if summary is None and spatial is None:
            continue  # a logits teacher: distilled on the classifier, exported as the backbone's head
        state, meta = export_adaptor(t, summary, spatial, run.normalizers.get(t.name))
        meta["file"] = f"adaptors/{t.name}.safetensors"
        save_file(state, os.path.join(out_dir, meta["file"]), metadata={"format": "radio-adaptor", "teacher": t.name})
        manifest["adaptors"][t.name] = meta
    manifest["timm_call"] = timm_call(manifest, out_dir)
    with open(os.path.join(out_dir, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2)
    _write_readme(manifest, out_dir)
    return manifest
