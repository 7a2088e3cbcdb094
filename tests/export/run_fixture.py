"""One tiny trained run per test session, shared by tests/eval and tests/export, plus the CLI under test."""
import os
import subprocess
import sys

from tests.conftest import REPO, tiny_run_overrides

_RUNS = {}

# Runs ``radio.cli.main`` with ``eval`` / ``export`` added when radio/cli.py does not wire them yet, so the
# subprocess sees exactly the CLI's error handling (exit 2, one line, no traceback).
_CLI_SHIM = """
import argparse, sys
import radio.cli as cli
from radio.eval.commands import add_commands as add_eval
from radio.export.commands import add_commands as add_export
base = cli.build_parser
def build_parser():
    parser = base()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, add in (("eval", add_eval), ("export", add_export)):
        if name not in sub.choices:
            add(sub)
    return parser
cli.build_parser = build_parser
sys.exit(cli.main(sys.argv[1:]))
"""


def trained_results(tmp_path_factory, demo_assets: str) -> str:
    """results_dir of a 4-step quickstart run (demo_a: combo, demo_b: spatial, both PHI-S), made once."""
    if "run" not in _RUNS:
        from radio.config.load import load_run_config
        from radio.engine.loop import run

        results = str(tmp_path_factory.mktemp("trained") / "results")
        run(load_run_config(os.path.join(REPO, "specs", "quickstart.yaml"), tiny_run_overrides(demo_assets, results)))
        _RUNS["run"] = results
    return _RUNS["run"]


def radio_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _CLI_SHIM, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)
