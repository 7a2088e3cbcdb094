"""The detection side of the CLI: ``radio coco-demo`` (a synthetic COCO set), and ``radio eval`` / ``radio export``
of a ``task: detection`` run (``radio/eval/commands.py`` and ``radio/export/commands.py`` hand them over)."""

import argparse
import os

from radio.errors import RadioError
from radio.run.layout import EVAL_DIR

_BACKBONE_ONLY_EVAL_FLAGS = ("knn_train", "knn_val", "labelled", "images", "max_images")


def detection_eval(args: argparse.Namespace, cfg, results_dir: str) -> int:
    """``cfg``: the spec's (``-e``) or the run's own config."""
    from radio.detection.run_files import evaluate_detection_run, format_detection_table
    from radio.report.dashboards import publish_eval_results

    given = [f"--{name.replace('_', '-')}" for name in _BACKBONE_ONLY_EVAL_FLAGS if getattr(args, name, None)]
    if given:
        raise RadioError(
            f"{', '.join(given)}: backbone-distillation options; a detection run is scored on its "
            "dataset.val_data_sources (COCO mAP), with --checkpoint, --init, --out, --batch-size and --no-fidelity "
            "(the student alone: no teacher weights read)."
        )
    out = args.out or os.path.join(results_dir, EVAL_DIR)
    result = evaluate_detection_run(
        results_dir,
        out,
        cfg=cfg,
        checkpoint=args.checkpoint,
        init=args.init,
        batch_size=args.batch_size,
        with_teacher=not args.no_fidelity,
    )
    print(format_detection_table(result))
    print(f"results: {result['eval_json']}")
    print(*publish_eval_results(results_dir, result), sep="\n")
    return 0


def detection_export(args: argparse.Namespace) -> int:
    from radio.detection.run_files import export_detection_run

    manifest = export_detection_run(args.results, args.out, args.checkpoint)
    print(f"exported {manifest['checkpoint']} to {args.out}: the student detector as a transformers folder")
    print(f"  load with: {manifest['load_call']}")
    size = manifest["eval_spatial_size"]
    print(
        f"  inputs: {size[0]}x{size[1]} RGB, (x / 255 - {manifest['norm_mean']}) / {manifest['norm_std']}; "
        f"{manifest['num_classes']} classes (label k = the k-th category id, sorted)"
    )
    return 0


def _coco_demo(args: argparse.Namespace) -> int:
    from radio.data.coco_synthetic import write_synthetic_coco

    sources = write_synthetic_coco(
        args.out, {"train": args.train, "val": args.val}, seed=args.seed, num_classes=args.classes
    )
    print(f"wrote a synthetic COCO detection set ({args.classes} classes) to {args.out}:")
    for split, source in sources.items():
        print(f"  {split}: {{image_dir: {source['image_dir']}, json_file: {source['json_file']}}}")
    return 0


def add_commands(subparsers) -> None:
    """Add ``coco-demo`` to the ``radio`` CLI's subparsers."""
    parser = subparsers.add_parser(
        "coco-demo",
        help="write a synthetic COCO detection set (shapes with exact boxes) for the detection specs",
        description="Writes OUT/{train,val}/images/*.jpg and OUT/{train,val}/annotations.json: coloured rectangles, "
        "ellipses and triangles (class = shape x colour) on textured backgrounds, never overlapping, so each box "
        "is exactly its shape's extent. The same --seed writes the same bytes.",
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument("--train", type=int, default=256, help="training images (default 256)")
    parser.add_argument("--val", type=int, default=64, help="validation images (default 64)")
    parser.add_argument("--classes", type=int, default=3, help="number of classes, 1..12 (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_coco_demo)
