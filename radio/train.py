"""Entry point for ``accelerate launch radio/train.py --spec SPEC [key=value ...]``.

The same code path as ``radio distill``: parse, validate, run the loop on this rank.
"""

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a file: drop radio/ itself from the path so its sub-folders do not shadow top-level modules.
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


def build_parser():
    from radio.arguments import IntermixedArgumentParser

    parser = IntermixedArgumentParser(
        description="radio distillation (one rank; start with accelerate launch). Exit status: 0 finished, "
        "2 a problem the message names, 75 stopped with a checkpoint (run the same command to resume)."
    )
    parser.add_argument("--spec", "-e", required=True, help="spec YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of spec fields")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Before the heavy imports: a stop request during start-up is kept, not fatal.
    from radio.engine.stop import EXIT_STOPPED, EXIT_USER_ERROR, StopRequest

    stop = StopRequest()
    from radio.engine.loop import run
    from radio.errors import RadioError, user_error_message
    from radio.run.spec import load_run_config

    rank = int(os.environ.get("RANK", "0"))
    try:
        result = run(load_run_config(args.spec, args.overrides), stop)
    except (RadioError, OSError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        # Errors the ranks agreed on are said once; anything else may concern one rank alone.
        if rank == 0:
            print(f"radio: error: {message}", file=sys.stderr)
        elif not getattr(exc, "same_on_every_rank", False):
            print(f"radio: error: [rank {rank}] {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    if result.stopped_early:
        return EXIT_STOPPED
    if rank == 0:
        print(f"done: {result.steps} steps; results in {result.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
