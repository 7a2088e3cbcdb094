"""angle / tangent_sphere running statistics are summed over ranks: 2 gloo processes hold the state a
single process gets from both ranks' batches."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from radio.losses.summary import SummaryLoss

pytestmark = pytest.mark.slow  # every test here spawns processes

DIM, STEPS, ROWS = 16, 3, 8


def step_data(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 * rank + step)
    return F.normalize(torch.randn(ROWS, DIM, generator=g, dtype=torch.float64) + 0.5 * (rank + 1), dim=-1)


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    sys.path.insert(0, {test_dir!r})
    from test_summary_distributed import STEPS, step_data
    from radio.losses.summary import SummaryLoss


    def run(rank, out_dir):
        dist.init_process_group("gloo", init_method="file://" + out_dir + "/rendezvous", rank=rank, world_size=2)
        loss = SummaryLoss("angle")
        for step in range(STEPS):
            loss.observe(step_data(rank, step))
        torch.save(loss.state_dict(), f"{{out_dir}}/rank{{rank}}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(run, args=(sys.argv[1],), nprocs=2, join=True)
    """
)


def test_two_ranks_hold_the_single_process_statistics(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(test_dir=os.path.dirname(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120, env=env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    single = SummaryLoss("angle")
    for step in range(STEPS):
        single.observe(torch.cat([step_data(0, step), step_data(1, step)]))
    for state in ranks:
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value)
