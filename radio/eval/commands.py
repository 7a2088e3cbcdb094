"""``radio eval -e SPEC | --results DIR``: kNN top-1, classification accuracy, teacher fidelity, PCA pictures."""

import argparse
import os

from radio.errors import RadioError
from radio.run.layout import EVAL_DIR


def eval_command(args: argparse.Namespace) -> int:
    from radio.eval.evaluate import EvalOptions, evaluate_run, format_table
    from radio.run.layout import load_results_config

    if args.spec:
        from radio.run.spec import load_run_config

        cfg = load_run_config(args.spec, args.overrides)
        results_dir = cfg.results_dir
    else:
        if args.overrides:
            raise RadioError(
                f"key=value overrides ({args.overrides[0]} ...) need -e SPEC; with --results the run's "
                "own config.yaml is used"
            )
        results_dir = args.results
        cfg = load_results_config(results_dir)[0]
    if cfg.task == "detection":
        from radio.detection.commands import detection_eval

        return detection_eval(args, cfg, results_dir)
    evaluate = cfg.evaluate
    opts = EvalOptions(
        checkpoint=args.checkpoint or (None if args.init else evaluate.checkpoint),
        init=args.init,
        knn_train=_absolute(args.knn_train),
        knn_val=_absolute(args.knn_val),
        labelled=_absolute(args.labelled),
        images=_absolute(args.images),
        knn_k=evaluate.knn_k,
        knn_temperature=evaluate.knn_temperature,
        batch_size=args.batch_size,
        max_images=args.max_images,
        fidelity=not args.no_fidelity,
        pca=not args.no_pca,
    )
    out = args.out or os.path.join(results_dir, EVAL_DIR)
    result = evaluate_run(results_dir, out, opts)
    print(format_table(result))
    print(f"results: {os.path.join(out, 'eval.json')}")
    # report.html, and the run's W&B / TensorBoard
    from radio.report.dashboards import publish_eval_results

    print(*publish_eval_results(results_dir, result), sep="\n")
    return 0


def add_commands(subparsers) -> None:
    """Add ``eval`` to the ``radio`` CLI's subparsers."""
    parser = subparsers.add_parser(
        "eval",
        help="kNN top-1, classification accuracy, per-teacher fidelity and PCA feature pictures of a trained run "
        "(a detection run: COCO mAP)",
        description="Evaluates a run's checkpoint (evaluate.checkpoint / --checkpoint, default the newest; --init: "
        "the student as initialised): kNN top-1 (evaluate.knn_k, evaluate.knn_temperature) with "
        "--knn-train/--knn-val, a classification run's top-1/top-5 and confusion matrix (and its logits "
        "teacher's accuracy) with --labelled, mean cosine to each teacher and PCA pictures on held-out images. "
        "Writes eval.json, pca.png and confusion_matrix.png. A task: detection run: COCO mAP, mAP50, mAP75 and "
        "S/M/L of the student and its teacher on dataset.val_data_sources, and the held-out distillation terms "
        "(--no-fidelity: the student alone).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-e", "--spec", "--experiment_spec", dest="spec", help="spec YAML of the run (its results_dir)")
    source.add_argument("--results", help="results_dir of a training run")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder or its model.safetensors")
    parser.add_argument(
        "--init",
        action="store_true",
        help="evaluate the student as the run initialised it (train.seed, no checkpoint): an untrained reference",
    )
    parser.add_argument(
        "--knn-train", default=None, help="labelled kNN bank: image folder (class sub-folders) or shards with .cls"
    )
    parser.add_argument("--knn-val", default=None, help="labelled kNN queries, same formats as --knn-train")
    parser.add_argument(
        "--labelled",
        default=None,
        metavar="DIR",
        help="classification runs: labelled images (class sub-folders in sorted order = labels 0, 1, ..., or "
        "shards with .cls) for the classifier's top-1/top-5 and confusion matrix, and the logits teacher's",
    )
    parser.add_argument(
        "--images",
        default=None,
        help="held-out images for fidelity and PCA (default: --knn-val, else dataset.val_dataset)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: RESULTS/eval)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-images", type=int, default=None, help="cap on images read from each source")
    parser.add_argument(
        "--no-fidelity",
        action="store_true",
        help="skip the teacher fidelity and the logits teacher's accuracy (no teacher weights needed)",
    )
    parser.add_argument("--no-pca", action="store_true", help="skip the PCA pictures")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of spec fields (with -e)")
    parser.set_defaults(func=eval_command)


def _absolute(path):
    """A folder the user named, absolute: ``eval.json`` and ``report.html`` are read away from the launch folder."""
    return os.path.abspath(path) if path else path
