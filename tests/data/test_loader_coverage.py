"""Distribution: readers (rank x lane) read disjoint parts that together cover a pass exactly once, and
every rank yields full batches even with fewer shards than readers."""

import pytest

from tests.data.data_helpers import make_cfg, small_plan, take
from radio.data.lanes import MAX_LANES_PER_RANK, LaneReader, ReaderContext, lanes_for_source
from radio.data.loader import TrainLoader
from radio.data.sources import build_sources, reader_units
from radio.data.synthetic import write_synthetic_shards


def first_pass_keys(source, reader, num_readers, seed=0):
    lane = LaneReader(source, 0, reader, num_readers, seed, ReaderContext())
    keys = []
    while True:
        raw, _ = lane.next_sample(lambda data: None)
        if raw.identity[3] > 0:  # the lane moved on to its next pass
            return keys
        keys.append(raw.key)


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("many"))
    write_synthetic_shards(root, 120, 2, seed=9, prefix="m", size_range=(32, 40))
    return root


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("layout", ["few_shards", "many_shards"])
def test_one_pass_reads_every_sample_exactly_once(two_sources, many_shards, world_size, layout):
    root = two_sources[0] if layout == "few_shards" else many_shards  # 3 shards / 60 shards
    source = build_sources(make_cfg([root]).train_dataset)[0]
    num_readers = world_size * MAX_LANES_PER_RANK
    read = [key for reader in range(num_readers) for key in first_pass_keys(source, reader, num_readers)]
    expected = 60 if layout == "few_shards" else 120
    assert len(read) == expected and len(set(read)) == expected


def test_units_of_a_pass_partition_every_shard():
    for num_files, num_readers in [(3, 48), (100, 96), (7, 7), (1, 144)]:
        owned = [u for r in range(num_readers) for u in reader_units(num_files, num_readers, r, 0, 0, 4)]
        assert len(owned) == len(set(owned))
        modulus = owned[0][2]
        assert sorted(owned) == [(f, c, modulus) for f in range(num_files) for c in range(modulus)]
        assert all(reader_units(num_files, num_readers, r, 0, 0, 4) for r in range(num_readers))


def test_passes_use_new_orders():
    orders = [reader_units(50, 4, 0, 0, 0, p) for p in range(3)]
    assert orders[0] != orders[1] != orders[2]


@pytest.mark.slow  # DataLoader worker processes
def test_fewer_shards_than_readers_every_rank_gets_full_batches(tmp_path):
    root = str(tmp_path / "one")
    # One shard for 3 x 48 readers: each reads one residue class of its samples (150 >= 144: none empty).
    write_synthetic_shards(root, 150, 1000, seed=4, prefix="one", size_range=(32, 40))
    world_size, steps = 3, 5
    per_rank = []
    for rank in range(world_size):
        loader = TrainLoader(
            make_cfg([root], batch_size=2, workers=2 if rank == 0 else 0),
            small_plan(),
            seed=0,
            rank=rank,
            world_size=world_size,
        )
        batches = take(loader, steps)
        assert [b.step for b in batches] == list(range(steps))
        assert all(len(b.keys) == 2 and all(b.keys) for b in batches)
        per_rank.append({k for b in batches for k in b.keys})
    assert not (per_rank[0] & per_rank[1]) and not (per_rank[1] & per_rank[2]) and not (per_rank[0] & per_rank[2])


def test_small_sources_get_fewer_lanes_so_no_reader_starts_empty(two_sources, many_shards):
    b = build_sources(make_cfg([two_sources[1]]).train_dataset)[0]
    many = build_sources(make_cfg([many_shards]).train_dataset)[0]
    assert lanes_for_source(many, 1, lambda: 120) == MAX_LANES_PER_RANK  # 60 shards >= 48 readers
    assert lanes_for_source(many, 2, lambda: 120) == 30  # 120 samples / (2 per reader x 2 ranks)
    assert lanes_for_source(b, 2, lambda: 30) == 7
    assert lanes_for_source(b, 64, lambda: 30) == 1
    loader = TrainLoader(make_cfg(two_sources), small_plan(), seed=0, rank=0, world_size=2)
    assert loader.lanes_per_rank == [15, 7] == loader.state_dict()["lanes_per_rank"]
