"""``radio models [PATTERN]`` (list the registry) and ``radio convert`` (teacher checkpoint converter)."""

import argparse

from radio.models.convert import build_parser, run
from radio.models.public_checkpoints import public_checkpoints
from radio.models.registry import get_model_info, list_models

COLUMNS_FOOTER = (
    "'teacher name': what a teacher of that type is called (metrics, heads, checkpoints) unless its spec sets "
    "`name`; width: channels of the spatial features; img: the native input size in pixels; prefix: CLS + "
    "register tokens ahead of the patch tokens; summary: length of the summary vector (0: none, e.g. SAM; "
    "C-RADIO's concatenates several CLS tokens). Any timm model is also available as timm/<timm model name>."
)


def list_command(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r} (any timm model also works as timm/<name>)")
        return 1
    print(
        f"{'name':45s} {'teacher name':20s} {'width':>6s} {'depth':>5s} {'patch':>5s} {'img':>5s} {'prefix':>6s} {'summary':>7s} "
        f"{'student':7s} for checkpoints"
    )
    for name in names:
        i = get_model_info(name)
        print(
            f"{name:45s} {i.short_name:20s} {i.embed_dim:6d} {i.depth:5d} {i.patch_size:5d} {i.img_size:5d} {i.num_prefix_tokens:6d} "
            f"{i.summary_dim:7d} {'yes' if i.is_student else '':7s} {public_checkpoints(name) or '-'}"
        )
    print(COLUMNS_FOOTER)
    return 0


def add_commands(subparsers) -> None:
    """Add ``models`` and ``convert`` to the ``radio`` CLI's subparsers."""
    parser = subparsers.add_parser("models", help="list registered backbones (students and teachers)")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'c_radio*'")
    parser.set_defaults(func=list_command)

    convert = subparsers.add_parser("convert", help="convert a teacher checkpoint to plain safetensors")
    build_parser(convert).set_defaults(func=run)
