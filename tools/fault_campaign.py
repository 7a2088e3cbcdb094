"""Fault-injection campaign: end a tiny real run in the ways a cluster does, restart it, and tally how many
continued bit-identically to an uninterrupted run.

    python tools/fault_campaign.py --kills 10 --sigterms 3 --disk-full --out /tmp/campaign

- kill -9 of the whole process tree at a random moment (checkpoints every step, so many land inside a
  checkpoint write), then the same command again;
- SIGTERM to the run's process group (DataLoader workers included): must exit 75 ("stopped") with a
  checkpoint, then the same command again;
- disk full (root only: results_dir on a small tmpfs that the run outgrows): must exit 2 with one message and
  keep the previous checkpoint; then the tmpfs is enlarged and the same command must finish.
Every restart must end with the uninterrupted run's per-step losses and ``student_final.safetensors``.
The last line is a JSON tally.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import psutil
import torch
from safetensors.torch import load_file

from radio.run.layout import STUDENT_FINAL_FILE, checkpoints_root, list_complete_checkpoints, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RADIO = os.path.join(os.path.dirname(sys.executable), "radio")
SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


def command(demo: str, results: str, steps: int) -> list:
    from radio.quickstart import quickstart_overrides

    overrides = quickstart_overrides(demo)[1:]
    return [
        RADIO,
        "distill",
        "-e",
        SPEC,
        f"results_dir={results}",
        *overrides,
        f"train.max_steps={steps}",
        "train.checkpoint_interval_steps=1",
        "train.keep_checkpoints=2",
        "dataset.batch_size=4",
        "dataset.workers=1",
        "logging.progress_bar=false",
    ]


def start(cmd, log):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)


def kill_tree(pid: int) -> None:
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def outcome(results: str) -> dict:
    losses = {r["step"]: r["loss/total"] for r in read_metrics(results)}
    return {"losses": losses, "student": load_file(os.path.join(results, STUDENT_FINAL_FILE))}


def identical(a: dict, b: dict) -> bool:
    return a["losses"] == b["losses"] and all(torch.equal(a["student"][k], b["student"][k]) for k in b["student"])


def finish(cmd, log) -> int:
    return subprocess.run(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1")
    ).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="work folder (demo data, runs, logs)")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--sigterms", type=int, default=3)
    parser.add_argument("--disk-full", action="store_true", help="needs root (mounts a tmpfs)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from radio.quickstart import prepare_demo_assets

    rng = random.Random(args.seed)
    demo = os.path.join(args.out, "demo")
    prepare_demo_assets(demo)
    log = open(os.path.join(args.out, "campaign.log"), "a")
    tally = {"kill9": [0, 0], "kill9_inside_a_checkpoint_write": 0, "sigterm_group": [0, 0], "disk_full": [0, 0]}

    reference_dir = os.path.join(args.out, "reference")
    shutil.rmtree(reference_dir, ignore_errors=True)
    began = time.time()
    assert finish(command(demo, reference_dir, args.steps), log) == 0, "the reference run failed"
    duration = time.time() - began
    reference = outcome(reference_dir)

    for trial in range(args.kills):
        results = os.path.join(args.out, f"kill9_{trial}")
        shutil.rmtree(results, ignore_errors=True)
        cmd = command(demo, results, args.steps)
        proc = start(cmd, log)
        time.sleep(rng.uniform(0.3 * duration, 0.95 * duration))
        kill_tree(proc.pid)
        proc.wait()
        root = checkpoints_root(results)
        if os.path.isdir(root) and any(n.endswith(".tmp") for n in os.listdir(root)):
            tally["kill9_inside_a_checkpoint_write"] += 1
        ok = finish(cmd, log) == 0 and identical(outcome(results), reference)
        tally["kill9"][0 if ok else 1] += 1
        print(f"kill -9 trial {trial}: {'identical' if ok else 'DIFFERENT'}", flush=True)

    for trial in range(args.sigterms):
        results = os.path.join(args.out, f"sigterm_{trial}")
        cmd = command(demo, results, args.steps)
        for attempt in range(5):
            shutil.rmtree(results, ignore_errors=True)
            proc = start(cmd, log)
            time.sleep(rng.uniform(0.3, 0.8) * duration / (attempt + 1))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            # Status 0: the run had passed its last step check and finished, as it should; that proves
            # nothing about stopping, so try an earlier moment.
            if proc.wait() != 0:
                break
        stopped = proc.returncode == 75
        ok = stopped and finish(cmd, log) == 0 and identical(outcome(results), reference)
        tally["sigterm_group"][0 if ok else 1] += 1
        print(f"SIGTERM trial {trial}: {'stopped, resumed, identical' if ok else 'FAILED'}", flush=True)

    if args.disk_full:
        tally["disk_full"] = disk_full_trial(demo, args, reference, log)

    print("tally (passed, failed):", json.dumps(tally))


def disk_full_trial(demo, args, reference, log) -> list:
    """results_dir on a tmpfs a little larger than two checkpoints; keep=2 needs three at once."""
    mount = os.path.join(args.out, "small_disk")
    os.makedirs(mount, exist_ok=True)
    step_folder = list_complete_checkpoints(os.path.join(args.out, "reference"))[-1]
    checkpoint_bytes = sum(os.path.getsize(os.path.join(step_folder, n)) for n in os.listdir(step_folder))
    size_kib = int(2.6 * checkpoint_bytes / 1024) + 256
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", mount], check=True)
    try:
        results = os.path.join(mount, "run")
        cmd = command(demo, results, args.steps)
        with open(os.path.join(args.out, "disk_full.log"), "w") as out:
            status = finish(cmd, out)
        text = open(os.path.join(args.out, "disk_full.log")).read()
        clean = status == 2 and "could not write checkpoint" in text and "Traceback" not in text
        subprocess.run(["mount", "-o", f"remount,size={size_kib * 20}k", mount], check=True)
        ok = clean and finish(cmd, log) == 0 and identical(outcome(results), reference)
        print(f"disk full: {'message, kept, resumed, identical' if ok else 'FAILED'}", flush=True)
        return [1, 0] if ok else [0, 1]
    finally:
        subprocess.run(["umount", mount], check=False)


if __name__ == "__main__":
    main()
