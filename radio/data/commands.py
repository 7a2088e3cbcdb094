"""Data subcommands: ``radio data preview``, ``radio shards stats``, ``radio shards write``."""

import argparse
import sys


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect the training data pipeline")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    preview = data_commands.add_parser(
        "preview",
        help="print each step's view sizes and the sample keys and sources of its batch, the realised mixture "
        "and drop counters",
        description="Runs the training loader of a spec without a model: per global step, every view's size "
        "(student and each teacher, in pixels per sample; how mosaic and FeatSharp teachers turn it into "
        "their input), and the key and source of every sample in this rank's batch; then the realised "
        "mixture and the drop counters.",
    )
    preview.add_argument("-e", "--spec", "--experiment_spec", dest="spec", required=True, help="spec YAML file")
    preview.add_argument("--steps", type=int, default=10, help="number of steps to print (default 10)")
    preview.add_argument("--start-step", type=int, default=0, help="first global step to print (default 0)")
    preview.add_argument("--world-size", type=int, default=1, help="number of training processes (default 1)")
    preview.add_argument("--rank", type=int, default=0, help="which process's batches to show (default 0)")
    preview.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the spec's)")
    preview.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    preview.add_argument("overrides", nargs="*", help="key=value overrides of spec fields")
    preview.set_defaults(func=_preview)

    shards = subparsers.add_parser("shards", help="write shards and their de-duplication statistics")
    shard_commands = shards.add_subparsers(dest="shards_command", required=True, metavar="COMMAND")
    stats = shard_commands.add_parser(
        "stats",
        help="count de-duplication keys (for data_weight_mode) into ROOT/dedup_counts.sqlite",
        description="Counts every sample's de-duplication key (json sha256|md5|uid, else a hash of the image "
        "bytes) over all ROOTs together and writes the counts to dedup_counts.sqlite in each ROOT.",
    )
    stats.add_argument("roots", nargs="+", metavar="ROOT", help="source root_dir(s) that may share images")
    stats.set_defaults(func=_stats)
    write = shard_commands.add_parser("write", help="pack an image folder into webdataset shards")
    write.add_argument("images_dir", help="folder of images (class sub-folders become .cls labels)")
    write.add_argument("out_dir", help="where to write {prefix}-NNNNNN.tar")
    write.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default 10000)")
    write.add_argument("--prefix", default="shard", help="shard file name prefix (default shard)")
    write.add_argument("--no-labels", action="store_true", help="do not write .cls labels from sub-folders")
    write.set_defaults(func=_write)


def _preview(args: argparse.Namespace) -> int:
    from radio.data.preview import preview, print_preview
    from radio.errors import DataError
    from radio.run.spec import load_run_config

    if not 0 <= args.rank < args.world_size:
        raise DataError(f"--rank must be in [0, --world-size={args.world_size}), got {args.rank}")
    if args.steps < 1 or args.start_step < 0:
        raise DataError(f"--steps must be >= 1 and --start-step >= 0, got {args.steps} and {args.start_step}")
    cfg = load_run_config(args.spec, args.overrides)
    report = preview(
        cfg,
        steps=args.steps,
        start_step=args.start_step,
        world_size=args.world_size,
        rank=args.rank,
        workers=args.workers,
    )
    print_preview(report, sys.stdout, as_json=args.json)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from radio.data.shard_tools import write_dedup_counts

    counts = write_dedup_counts(args.roots)
    repeated = sum(1 for count in counts.values() if count > 1)
    print(
        f"{sum(counts.values())} samples, {len(counts)} distinct keys, {repeated} keys seen more than once; "
        f"counts written to dedup_counts.sqlite in {len(args.roots)} root(s)"
    )
    return 0


def _write(args: argparse.Namespace) -> int:
    from radio.data.shard_tools import write_folder_shards

    paths = write_folder_shards(
        args.images_dir, args.out_dir, maxcount=args.maxcount, prefix=args.prefix, with_labels=not args.no_labels
    )
    print(f"wrote {len(paths)} shard(s) to {args.out_dir}")
    return 0
