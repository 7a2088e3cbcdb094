"""Pack an image folder into WebDataset shards (the same code as ``radio shards write``).

    python tools/make_shards.py IMAGES_DIR OUT_DIR [--maxcount 10000] [--prefix shard] [--no-labels]

Every image under IMAGES_DIR (sorted) becomes one sample: the image, a ``.json`` sidecar with its relative
path and, when the images sit in class sub-folders, a ``.cls`` label (sorted class index).
"""

import argparse
import sys

from radio.data.commands import add_commands


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make_shards", description=__doc__.split("\n")[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["shards", "write", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
