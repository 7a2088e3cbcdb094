import os
import subprocess
import sys

import pytest

# Tests share 2 cores with DataLoader workers and subprocesses: one intra-op thread each keeps them fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """Quickstart demo shards + demo teacher weights, written once per test session."""
    from radio.quickstart import prepare_demo_assets

    out = str(tmp_path_factory.mktemp("demo"))
    prepare_demo_assets(out)
    return out


def tiny_run_overrides(demo_out: str, results_dir: str, *extra: str) -> list:
    """The quickstart spec shrunk to seconds: few steps, small batches, no worker processes."""
    from radio.quickstart import quickstart_overrides

    overrides = quickstart_overrides(demo_out)
    overrides[0] = f"results_dir={results_dir}"
    return overrides + [
        "train.max_steps=4",
        "dataset.batch_size=4",
        "dataset.workers=0",
        "train.log_every_n_steps=1",
        "logging.progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="session")
def trained_results(tmp_path_factory, demo_assets):
    """results_dir of a 4-step quickstart run (demo_a: combo, demo_b: spatial, both PHI-S), made once."""
    from radio.engine.loop import run
    from radio.run.spec import load_run_config

    results = str(tmp_path_factory.mktemp("trained") / "results")
    run(load_run_config(os.path.join(REPO, "specs", "quickstart.yaml"), tiny_run_overrides(demo_assets, results)))
    return results


def radio_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed ``radio`` console script in a subprocess, offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = os.path.join(os.path.dirname(sys.executable), "radio")
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
