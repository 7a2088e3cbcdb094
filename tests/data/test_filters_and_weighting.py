"""Native-resolution and near-constant filters (per-reason counters), and data_weight_mode acceptance
from the counts ``radio shards stats`` writes."""

import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tests.data.data_helpers import image_bytes, make_cfg, small_plan, take, write_tar
from radio.cli import main as radio_main
from radio.config.schema import NativeResolutionFilter
from radio.data.crops import CropSettings, SampleDropped, decode_crop
from radio.data.dedup import KeyCounts, WeightedAcceptance, counts_path
from radio.data.filters import native_resolution_drop
from radio.data.loader import TrainLoader
from radio.data.synthetic import jpeg_bytes
from radio.errors import DataError


@pytest.mark.parametrize(
    "limits,size,reason",
    [
        (NativeResolutionFilter(min_short_side=100), (300, 99), "dropped/min_short_side"),
        (NativeResolutionFilter(min_long_side=300), (299, 200), "dropped/min_long_side"),
        (NativeResolutionFilter(min_area=10_000), (99, 100), "dropped/min_area"),
        (NativeResolutionFilter(max_aspect_ratio=2.0), (100, 201), "dropped/max_aspect_ratio"),
        (NativeResolutionFilter(max_aspect_ratio=2.0), (201, 100), "dropped/max_aspect_ratio"),
        (NativeResolutionFilter(min_short_side=100, max_aspect_ratio=2.0), (100, 200), None),
        (NativeResolutionFilter(), (1, 100_000), None),  # nothing set: no limits at all
    ],
)
def test_native_resolution_thresholds(limits, size, reason):
    assert native_resolution_drop(*size, limits) == reason


def test_filters_see_the_native_size_and_counters_name_the_reason(tmp_path):
    members = [(f"big{i}.jpg", image_bytes(i, 120, 100)) for i in range(12)]
    members += [(f"small{i}.jpg", image_bytes(50 + i, 60, 60)) for i in range(6)]
    members += [(f"wide{i}.jpg", image_bytes(70 + i, 400, 100)) for i in range(6)]
    flat = jpeg_bytes(Image.new("RGB", (128, 128), (90, 120, 30)))
    members += [(f"flat{i}.jpg", flat) for i in range(6)]
    write_tar(tmp_path / "s.tar", members)
    cfg = make_cfg([str(tmp_path)], native=NativeResolutionFilter(min_short_side=80, max_aspect_ratio=3.0))
    batches = take(TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1), 12)
    keys = {k for b in batches for k in b.keys}
    assert keys == {f"s.tar:big{i}" for i in range(12)}
    counters = batches[-1].counters
    assert counters["dropped/min_short_side"] >= 6
    assert counters["dropped/max_aspect_ratio"] >= 6
    assert counters["dropped/near_constant"] >= 6


def test_near_constant_filter_can_be_disabled():
    flat = jpeg_bytes(Image.new("RGB", (64, 64), (10, 10, 10)))
    with pytest.raises(SampleDropped) as dropped:
        decode_crop(flat, random.Random(0), 32, CropSettings())
    assert dropped.value.reason == "dropped/near_constant"
    assert decode_crop(flat, random.Random(0), 32, CropSettings(near_constant_std=None)).shape == (32, 32, 3)


@pytest.fixture()
def duplicated_source(tmp_path):
    """40 distinct images once each, one image repeated 40 times (same json sha256)."""
    members = []
    for i in range(40):
        members += [(f"u{i}.jpg", image_bytes(i)), (f"u{i}.json", json.dumps({"sha256": f"u{i}"}).encode())]
    repeated = image_bytes(999)
    for i in range(40):
        members += [(f"r{i}.jpg", repeated), (f"r{i}.json", json.dumps({"sha256": "same"}).encode())]
    write_tar(tmp_path / "s.tar", members)
    return str(tmp_path)


def test_shards_stats_then_inv_frequency_downweights_repeats(duplicated_source, capsys):
    assert radio_main(["shards", "stats", duplicated_source]) == 0
    assert "41 distinct keys" in capsys.readouterr().out
    counts = KeyCounts(counts_path(duplicated_source))
    assert counts.count("sha256:same") == 40 and counts.count("sha256:u3") == 1 and counts.count("absent") == 1

    def repeated_share(mode):
        cfg = make_cfg([duplicated_source], data_weight_mode=mode, batch_size=8)
        keys = [k for b in take(TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1), 30) for k in b.keys]
        return sum(":r" in k for k in keys) / len(keys), keys

    share_none, _ = repeated_share("none")
    share_inv, keys = repeated_share("inv_frequency")
    assert 0.4 < share_none < 0.6  # half the samples are copies of one image
    assert share_inv < 0.1  # ~1 of the 40 copies is kept per pass: 1/41 of what is emitted
    assert len(keys) == 240  # batches stay full: the slot goes to the source's next accepted sample


def test_weight_modes_keep_probability(duplicated_source):
    radio_main(["shards", "stats", duplicated_source])
    counts = KeyCounts(counts_path(duplicated_source))
    expected = {"inv_frequency": 1 / 40, "inv_sq_frequency": 1 / 1600, "inv_log_frequency": np.log(2) / np.log(41)}
    for mode, probability in expected.items():
        acceptance = WeightedAcceptance(mode, counts, seed=0)
        assert acceptance.keep_probability("sha256:same") == pytest.approx(probability)
        assert acceptance.keep_probability("sha256:u1") == 1.0
        kept = Counter(acceptance.accept("sha256:same", ("x", i)) for i in range(20_000))
        assert kept[True] / 20_000 == pytest.approx(probability, abs=0.01)


def test_weighting_without_counts_file_says_how_to_make_it(tmp_path):
    write_tar(tmp_path / "s.tar", [("a.jpg", image_bytes(0))])
    with pytest.raises(DataError, match="radio shards stats"):
        TrainLoader(
            make_cfg([str(tmp_path)], data_weight_mode="inv_frequency"), small_plan(), seed=0, rank=0, world_size=1
        )


@pytest.mark.slow  # DataLoader worker processes
def test_weighting_decisions_do_not_depend_on_the_worker_count(duplicated_source):
    radio_main(["shards", "stats", duplicated_source])
    runs = [
        [
            b.keys
            for b in take(
                TrainLoader(
                    make_cfg([duplicated_source], data_weight_mode="inv_sq_frequency", workers=workers),
                    small_plan(),
                    seed=1,
                    rank=0,
                    world_size=1,
                ),
                10,
            )
        ]
        for workers in (0, 2)
    ]
    assert runs[0] == runs[1]
