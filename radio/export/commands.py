"""``radio export --results DIR [--checkpoint PATH] --out OUT_DIR``."""

import argparse


def export_command(args: argparse.Namespace) -> int:
    from radio.export.export import export_run
    from radio.run.layout import load_results_config

    if load_results_config(args.results)[0].task == "detection":
        from radio.detection.commands import detection_export

        return detection_export(args)

    manifest = export_run(args.results, args.out, args.checkpoint)
    print(f"exported {manifest['checkpoint']} to {args.out}:")
    backbone = manifest["backbone"]
    print(f"  backbone: {backbone['file']}  (load with: {manifest['timm_call']})")
    if "classifier" in backbone:
        print(
            f"  classifier head: {backbone['classifier']['num_classes']} classes, timm's head.weight/head.bias in "
            f"{backbone['file']} (model(x) -> logits)"
        )
    for name, meta in manifest["adaptors"].items():
        print(f"  adaptor {name}: {meta['file']}")
    return 0


def add_commands(subparsers) -> None:
    """Add ``export`` to the ``radio`` CLI's subparsers."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained student as a timm-loadable backbone plus per-teacher adaptors (a detection run: "
        "the student detector as a transformers folder)",
        description="Writes backbone.safetensors (timm NaFlexVit C-RADIO layout; a classification run's classifier "
        "as timm's head), adaptors/<teacher>.safetensors (PHI-S / standardize inverse folded in) and export.json "
        "with the exact timm.create_model call. A task: detection run: the student detector as a transformers "
        "folder (config.json + model.safetensors) that AutoModelForObjectDetection.from_pretrained reloads, and "
        "export.json.",
    )
    parser.add_argument("--results", required=True, help="results_dir of a training run")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder (results/checkpoints/step_*) or its model.safetensors "
        "(default: the newest complete one)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=export_command)
