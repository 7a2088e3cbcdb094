"""Bad data is skipped and counted by reason, said once per source and reason with a count and an example
shard and key; the run goes on. A source that yields nothing, or too many unreadable samples, stops with a
clear error."""

import json
import logging
import os
import re
import shutil
import subprocess

import pytest

from radio.config.schema import NativeResolutionFilter
from radio.data.loader import TrainLoader
from radio.errors import DataError
from tests.data.data_helpers import image_bytes, make_cfg, small_plan, take, write_tar

STEPS = 40  # x 4 samples: several passes over the ~20 samples below


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    good = image_bytes(1)
    write_tar(
        root / "s0.tar",
        [
            ("ok0.jpg", image_bytes(2)),
            ("ok0.json", json.dumps({"uid": "u0"}).encode()),
            ("corrupt.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg"),
            ("cut.jpg", good[: len(good) // 2]),
            ("empty.jpg", b""),
            ("textonly.txt", b"no image here"),
            ("badjson.jpg", image_bytes(3)),
            ("badjson.json", b"{not json"),
            ("dotted.name.jpg", image_bytes(4)),  # key "dotted", extension "name.jpg"
            ("deep/er/nested.jpg", image_bytes(5)),
            ("ok1.jpg", image_bytes(6)),
            ("ok1.jpg", image_bytes(7)),  # the same member twice: the first is used
            ("ok0.cls", b"3"),  # ok0 again, not consecutive: a separate sample without an image
        ],
    )
    nested = root / "sub" / "dir"
    nested.mkdir(parents=True)
    write_tar(nested / "s1.tar", [(f"n{i}.jpg", image_bytes(10 + i)) for i in range(6)], gnu=True)
    write_tar(root / "truncated.tar", [(f"t{i}.jpg", image_bytes(20 + i, 200, 160)) for i in range(4)])
    size = os.path.getsize(root / "truncated.tar")
    with open(root / "truncated.tar", "r+b") as stream:
        stream.truncate(size // 2)
    write_tar(root / "badheader.tar", [("h0.jpg", image_bytes(30)), ("h1.jpg", image_bytes(31))])
    with open(root / "badheader.tar", "r+b") as stream:
        stream.seek(0)
        stream.write(b"garbage!")
    return str(root)


def run_messy(messy_root, caplog, steps=STEPS):
    loader = TrainLoader(make_cfg([messy_root], max_error_rate=1.0), small_plan(), seed=0, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        batches = take(loader, steps)
    return batches, {key for b in batches for key in b.keys}, batches[-1].counters


def test_the_run_continues_and_counters_say_why(messy_root, caplog):
    batches, keys, counters = run_messy(messy_root, caplog)
    assert len(batches) == STEPS and all(len(b.keys) == 4 for b in batches)
    for reason in (
        "error/corrupt_image",
        "error/empty_member",
        "skipped/no_image",
        "error/bad_json",
        "error/truncated_tar",
        "error/corrupt_tar",
        "format/repeated_key",
        "format/duplicate_member",
    ):
        assert counters.get(reason, 0) >= 1, reason
    assert counters["error/corrupt_image"] >= 2  # random bytes and a half-written JPEG
    bad = {"s0.tar:corrupt", "s0.tar:cut", "s0.tar:empty", "s0.tar:textonly"}
    assert not keys & bad
    # Usable samples are used: sidecar-less, bad-JSON, dotted and nested names, GNU tar in sub-folders,
    # the samples of a truncated tar before the damage.
    for key in (
        "s0.tar:ok0",
        "s0.tar:badjson",
        "s0.tar:dotted",
        "s0.tar:deep/er/nested",
        "s0.tar:ok1",
        "sub/dir/s1.tar:n0",
        "sub/dir/s1.tar:n5",
        "truncated.tar:t0",
    ):
        assert key in keys, key
    assert not any(key.startswith("badheader.tar") for key in keys)


def test_each_kind_of_bad_data_is_said_once_per_source_with_a_count(messy_root, caplog):
    _, _, counters = run_messy(messy_root, caplog)  # several passes over the data
    messages = [r.getMessage() for r in caplog.records]
    source = os.path.basename(messy_root)
    corrupt = [m for m in messages if "error/corrupt_image" in m]
    # The first sight names an example; a total follows at the end only if more came after it.
    assert corrupt[0].startswith(f"source {source!r}: error/corrupt_image: ") and "s0.tar sample '" in corrupt[0]
    assert len(corrupt) <= 2 and re.search(r": 2 samples( so far)?, e\.g\.", corrupt[-1])  # 'corrupt' and 'cut'
    assert counters["error/corrupt_image"] > 2  # read again in later passes: counted again, not said
    for reason, count in (
        ("error/truncated_tar", "1 shard"),
        ("error/corrupt_tar", "1 shard"),
        ("format/repeated_key", "1 sample"),
    ):
        (said,) = [m for m in messages if f": {reason}: " in m]
        assert f"{reason}: {count} so far, e.g. " in said


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU/BSD tar")
def test_shards_written_by_the_tar_command(tmp_path):
    folder = tmp_path / "files"
    long_dir = folder / ("very_long_folder_name_" * 4) / "x"
    long_dir.mkdir(parents=True)
    for i in range(4):
        (long_dir / f"img{i}.jpg").write_bytes(image_bytes(40 + i))
        (long_dir / f"img{i}.json").write_text(json.dumps({"md5": f"m{i}"}))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "cf", str(root / "cmd.tar"), "-C", str(folder), "."], check=True)
    loader = TrainLoader(make_cfg([str(root)]), small_plan(), seed=0, rank=0, world_size=1)
    keys = {k for b in take(loader, 4) for k in b.keys}
    relative = os.path.relpath(long_dir, folder)
    assert {f"cmd.tar:{relative}/img{i}" for i in range(4)} == keys


def test_too_many_unreadable_samples_stop_the_run(tmp_path):
    members = [(f"bad{i}.jpg", b"not an image") for i in range(30)] + [
        (f"ok{i}.jpg", image_bytes(i)) for i in range(10)
    ]
    write_tar(tmp_path / "s.tar", members)
    loader = TrainLoader(make_cfg([str(tmp_path)], max_error_rate=0.05), small_plan(), seed=0, rank=0, world_size=1)
    with pytest.raises(DataError, match="max_error_rate=0.05"):
        take(loader, 100)


def test_a_source_that_yields_nothing_stops_the_run(tmp_path):
    write_tar(tmp_path / "s.tar", [(f"small{i}.jpg", image_bytes(i, 24, 24)) for i in range(10)])
    cfg = make_cfg([str(tmp_path)], native=NativeResolutionFilter(min_short_side=100))
    loader = TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)
    with pytest.raises(DataError, match="yields no usable samples.*dropped/min_short_side"):
        take(loader, 1)


@pytest.mark.slow  # DataLoader worker processes
def test_worker_errors_reach_the_caller_as_data_errors(tmp_path):
    write_tar(tmp_path / "s.tar", [(f"small{i}.jpg", image_bytes(i, 24, 24)) for i in range(10)])
    cfg = make_cfg([str(tmp_path)], workers=2, native=NativeResolutionFilter(min_short_side=100))
    loader = TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)
    with pytest.raises(DataError, match="yields no usable samples"):
        take(loader, 1)


def test_missing_or_empty_roots_name_the_field(tmp_path):
    with pytest.raises(DataError, match=r"tar_data_sources\[0\]\.root_dir.*not a directory"):
        TrainLoader(make_cfg([str(tmp_path / "nope")]), small_plan(), seed=0, rank=0, world_size=1)
    with pytest.raises(DataError, match=r"tar_data_sources\[0\]\.root_dir: no \*\.tar shards"):
        TrainLoader(make_cfg([str(tmp_path)]), small_plan(), seed=0, rank=0, world_size=1)


def test_samples_per_file_is_checked_against_what_is_read(two_sources, caplog):
    cfg = make_cfg([two_sources[1]], samples_per_file=7)  # the shards hold 10 samples each
    loader = TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)
    assert loader.steps_per_epoch == 6  # the hint sizes the epoch: ceil(3 shards x 7 / 4)
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        counters = take(loader, 40)[-1].counters
    assert counters["format/samples_per_file_mismatch"] == 3  # each shard once, over several passes
    (said,) = [r.getMessage() for r in caplog.records if "samples_per_file" in r.getMessage()]
    assert said.startswith("source 'b': 3 shards so far hold more samples than samples_per_file=7 says (10 each")
    assert "set samples_per_file to about 10" in said
