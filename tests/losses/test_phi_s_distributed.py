"""PHI-S statistics all-reduced over 2 processes (gloo, CPU) equal the single-process estimate."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from radio.losses.phi_s import PhiStandardizer
from tests.losses.normalizer_steps import observe_and_refresh

pytestmark = pytest.mark.slow  # every test here trains or spawns processes

DIM, STEPS, ROWS = 24, 8, 50
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def step_data(rank: int, step: int) -> torch.Tensor:
    """The [ROWS, DIM] float64 features rank ``rank`` sees at ``step``: anisotropic, rank-dependent."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    scales = torch.logspace(-1, 1.5, DIM, dtype=torch.float64)
    return torch.randn(ROWS, DIM, generator=g, dtype=torch.float64) * scales + rank


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    sys.path[:0] = [{test_dir!r}, {repo!r}]
    from test_phi_s_distributed import DIM, STEPS, step_data, observe_and_refresh
    from radio.losses.phi_s import PhiStandardizer


    def run(rank, out_dir):
        dist.init_process_group("gloo", init_method="file://" + out_dir + "/rendezvous", rank=rank, world_size=2)
        norm = PhiStandardizer(DIM, refresh_every_n_steps=3)
        refreshed = [step for step in range(1, STEPS + 1) if observe_and_refresh(norm, step_data(rank, step))]
        at_refresh = {{k: v.clone() for k, v in norm.state_dict().items()}}
        norm.sync_statistics()  # what a refresh does first
        torch.save({{"refreshed": refreshed, "at_refresh": at_refresh, "synced": norm.state_dict()}},
                   f"{{out_dir}}/rank{{rank}}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(run, args=(sys.argv[1],), nprocs=2, join=True)
    """
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("phi_s_ddp")
    script = out / "worker.py"
    script.write_text(WORKER.format(test_dir=os.path.dirname(__file__), repo=REPO))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=120, env=env)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_both_ranks_refresh_on_the_same_steps_and_hold_the_same_transform(ranks):
    assert ranks[0]["refreshed"] == ranks[1]["refreshed"] == [1, 4, 7]
    for key in ("total_count", "total_sum", "total_outer", "mean", "transform", "alpha"):
        assert torch.equal(ranks[0]["at_refresh"][key], ranks[1]["at_refresh"][key]), key
    # Step 8 is not a refresh: each rank still holds its own pending sums.
    assert ranks[0]["at_refresh"]["pending_count"].item() == ranks[1]["at_refresh"]["pending_count"].item() == 50
    assert not torch.equal(ranks[0]["at_refresh"]["pending_sum"], ranks[1]["at_refresh"]["pending_sum"])


def test_all_reduced_estimate_equals_the_single_process_estimate(ranks):
    single = PhiStandardizer(DIM)
    observe_and_refresh(single, torch.cat([step_data(r, s) for s in range(1, 8) for r in range(2)]))
    state = ranks[0]["at_refresh"]
    multi = PhiStandardizer(DIM)
    multi.load_state_dict(state)
    assert state["total_count"].item() == single.total_count.item() == 2 * 7 * 50
    for got, want in zip(multi.statistics(), single.statistics()):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert multi.alpha.item() == pytest.approx(single.alpha.item(), rel=1e-12)


def test_sync_merges_every_ranks_pending_statistics(ranks):
    for rank in ranks:
        assert rank["synced"]["pending_count"].item() == 0
        assert rank["synced"]["total_count"].item() == 2 * STEPS * 50
    assert torch.equal(ranks[0]["synced"]["total_outer"], ranks[1]["synced"]["total_outer"])
    expected = torch.cat([step_data(r, s) for s in range(1, STEPS + 1) for r in range(2)]).sum(0)
    assert torch.allclose(ranks[0]["synced"]["total_sum"], expected, rtol=1e-12)
