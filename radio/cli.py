"""``radio`` console script: thin argument parsing over the library.

User-facing problems (``RadioError``) print one paragraph and exit 2, without a traceback.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

from radio.arguments import IntermixedArgumentParser
from radio.engine.stop import EXIT_STOPPED, EXIT_USER_ERROR, StopRequest
from radio.errors import RadioError, user_error_message


def _add_distill(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="run multi-teacher distillation from a spec file",
        description="Run distillation. Extra key=value arguments override spec fields "
        "(e.g. results_dir=/out train.max_steps=100).",
    )
    p.add_argument("-e", "--spec", "--experiment_spec", dest="spec", required=True, help="spec YAML file")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (per teacher) and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides of spec fields")
    p.set_defaults(func=_distill, stop=None)


def _distill(args) -> int:
    from radio.run.spec import load_run_config

    cfg = load_run_config(args.spec, args.overrides)
    if args.print_config and cfg.task == "detection":
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg), end="")
        print(f"# files: {_path_problem(cfg) or 'every path the run needs exists and is readable'}")
        return 0
    if args.print_config:
        from radio.engine.print_config import format_resolved_config
        from radio.run.teachers import resolution_notes, resolve_teachers

        teachers = resolve_teachers(cfg)
        print(format_resolved_config(cfg, teachers))
        for note in resolution_notes(cfg, teachers):
            print(f"# {note}")
        print(f"# files: {_path_problem(cfg) or 'every path the run needs exists and is readable'}")
        return 0
    if _needs_launcher(cfg.train.num_gpus * cfg.train.num_nodes):
        if cfg.train.num_nodes > 1:
            raise RadioError(
                f"train.num_nodes={cfg.train.num_nodes}: `radio distill` starts the ranks of one node only; start "
                "multi-node runs with tools/slurm/radio_distill.sbatch (or `accelerate launch` on every node)."
            )
        return _relaunch_with_accelerate(cfg.train.num_gpus, args.spec, args.overrides, cfg.results_dir, args.stop)
    from radio.engine.loop import run

    result = run(cfg, args.stop)
    if result.stopped_early:
        return EXIT_STOPPED
    print(f"done: {result.steps} steps; results in {result.results_dir}")
    return 0


def _path_problem(cfg) -> Optional[str]:
    """What a run would stop on before starting (a spec may hold placeholder paths while it is drafted)."""
    from radio.run.spec import check_paths

    try:
        check_paths(cfg)
    except RadioError as exc:
        return f"a run would stop here: {exc}"
    return None


def _needs_launcher(num_processes: int) -> bool:
    # Already under accelerate/torchrun: this process is one rank, do not spawn more.
    return num_processes > 1 and "LOCAL_RANK" not in os.environ and "RANK" not in os.environ


def _relaunch_with_accelerate(
    num_gpus: int, spec: str, overrides: List[str], results_dir: str, stop: StopRequest
) -> int:
    """``radio distill`` with num_gpus > 1 on one node: start the ranks through ``accelerate launch``.

    A stop signal sent to this process alone is passed on as SIGTERM (which the launcher forwards to the
    ranks); the exit status is the run's (``run_status.json``), since the launcher reports only failure.
    """
    from radio.run.layout import read_run_status

    train_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_gpus),
        train_py,
        "--spec",
        spec,
        *overrides,
    ]
    print("launching:", " ".join(cmd), flush=True)
    started = time.time()
    proc = subprocess.Popen(cmd)
    forwarded = False
    while proc.poll() is None:
        if stop.signal_name and not forwarded:
            proc.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.2)
    status = read_run_status(results_dir, newer_than=started)
    if status == "stopped":
        return EXIT_STOPPED
    return proc.returncode


def _add_quickstart(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="make demo shards + demo teachers and run a tiny CPU distillation",
        description="Writes demo data (shards and a labelled split for radio eval) and random-init demo "
        "teachers under --out (if absent) and runs specs/quickstart.yaml. A re-run resumes an unfinished run; a "
        "finished one is left as it is.",
    )
    p.add_argument("--out", default="quickstart_out", help="folder for demo data, demo weights and results")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete the previous results (OUT/results, or the results_dir override) and start over; the demo "
        "data and weights are kept",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides of quickstart spec fields")
    p.set_defaults(func=_quickstart)


def _quickstart(args) -> int:
    from radio.quickstart import run_quickstart

    return 0 if run_quickstart(args.out, args.overrides, fresh=args.fresh) is not None else EXIT_STOPPED


def build_parser() -> argparse.ArgumentParser:
    from radio.data.commands import add_commands as add_data_commands
    from radio.detection.commands import add_commands as add_detection_commands
    from radio.eval.commands import add_commands as add_eval_commands
    from radio.export.commands import add_commands as add_export_commands
    from radio.models.commands import add_commands as add_model_commands

    parser = IntermixedArgumentParser(prog="radio", description="RADIO-style multi-teacher knowledge distillation.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_distill(subparsers)
    _add_quickstart(subparsers)
    add_model_commands(subparsers)
    add_data_commands(subparsers)
    add_eval_commands(subparsers)
    add_export_commands(subparsers)
    add_detection_commands(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # Before the heavy imports: a stop request (SIGTERM, SIGUSR1, Ctrl-C) during start-up is kept, not fatal.
    stop = StopRequest()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is _distill:
        args.stop = stop
    else:
        stop.restore()
    try:
        return args.func(args)
    except BrokenPipeError:  # `radio models | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    except (RadioError, OSError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"radio: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
