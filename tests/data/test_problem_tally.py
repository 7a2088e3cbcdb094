"""The tools that read shards outside training (`radio shards stats`, the eval image reader) say bad data as
one line per (folder, reason) with a count and an example, then a total (radio/data/problem_tally.py)."""

import logging
import os

import torch

from radio.cli import main as radio_main
from radio.eval.images import iter_image_batches
from tests.data.data_helpers import image_bytes, write_tar


def bad_shards(folder, bad_cls: int, bad_json: int, good: int = 2) -> None:
    """``a.tar``: ``good`` clean samples, then samples with a non-integer ``.cls`` or a broken ``.json``;
    ``b.tar``: cut off in its second sample (truncated)."""
    os.makedirs(folder, exist_ok=True)
    members = []
    for i in range(good):
        members += [(f"g{i}.jpg", image_bytes(i)), (f"g{i}.cls", b"1")]
    for i in range(bad_cls):
        members += [(f"c{i}.jpg", image_bytes(10 + i)), (f"c{i}.cls", b"x")]
    for i in range(bad_json):
        members += [(f"j{i}.jpg", image_bytes(20 + i)), (f"j{i}.json", b"{not json")]
    write_tar(os.path.join(folder, "a.tar"), members)
    cut = os.path.join(folder, "b.tar")
    write_tar(cut, [("k0.jpg", image_bytes(30)), ("k1.jpg", b"y" * 4000)])
    with open(cut, "r+b") as stream:
        stream.truncate(os.path.getsize(cut) // 2)


def warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "radio.data"]


def test_shards_stats_says_each_kind_once_with_its_count_and_a_total(tmp_path, caplog, capsys):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    bad_shards(first, bad_cls=3, bad_json=2)
    bad_shards(second, bad_cls=1, bad_json=0)
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        assert radio_main(["shards", "stats", first, second]) == 0
    said = warnings(caplog)
    by_kind = {tuple(line.split(": ", 2)[:2]): line for line in said[:-1]}
    assert set(by_kind) == {
        (first, "error/bad_cls"),
        (first, "error/bad_json"),
        (first, "error/truncated_tar"),
        (second, "error/bad_cls"),
        (second, "error/truncated_tar"),
    }
    assert ": 3 samples, e.g. " in by_kind[(first, "error/bad_cls")]
    assert f"{first}/a.tar sample 'c0' (not an integer" in by_kind[(first, "error/bad_cls")]  # the first one met
    assert ": 1 sample, e.g. " in by_kind[(second, "error/bad_cls")]
    assert ": 1 shard, e.g. " in by_kind[(first, "error/truncated_tar")]
    assert said[-1].startswith("bad data: 8 problems of 3 kinds under 2 folders (above)"), said[-1]
    assert capsys.readouterr().out.startswith("12 samples,")  # 8 + 4 readable ones (an image each) still counted


def test_clean_shards_say_nothing(tmp_path, caplog):
    write_tar(tmp_path / "a.tar", [("g.jpg", image_bytes(1))])
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        assert radio_main(["shards", "stats", str(tmp_path)]) == 0
    assert warnings(caplog) == []


def test_the_eval_reader_says_undecodable_images_and_shard_problems_once_each(tmp_path, caplog):
    folder = str(tmp_path)
    bad_shards(folder, bad_cls=2, bad_json=0)
    write_tar(tmp_path / "c.tar", [(f"u{i}.jpg", b"not an image") for i in range(3)])
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        labels = torch.cat([lab for _, lab in iter_image_batches(folder, 16, batch_size=4)])
    assert labels.tolist() == [1, 1, -1, -1, -1]  # the good ones, the bad .cls ones, the one before the cut
    said = warnings(caplog)
    assert len(said) == 4, said
    assert said[0].startswith(f"{folder}: error/bad_cls: 2 samples, e.g. {folder}/a.tar sample 'c0'")
    assert said[1].startswith(f"{folder}: error/corrupt_image: 3 images, e.g. {folder}/c.tar sample 'u0' (")
    assert said[2].startswith(f"{folder}: error/truncated_tar: 1 shard, e.g. {folder}/b.tar")
    assert said[3].startswith("bad data: 6 problems of 3 kinds under 1 folder (above)")


def test_a_reader_stopped_early_still_says_what_it_met(tmp_path, caplog):
    write_tar(tmp_path / "a.tar", [("u.jpg", b"not an image")] + [(f"g{i}.jpg", image_bytes(i)) for i in range(4)])
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        batches = iter_image_batches(str(tmp_path), 16, batch_size=2)
        next(batches)
        batches.close()  # as radio eval's PCA does: the first batch only
    said = warnings(caplog)
    assert len(said) == 2 and ": error/corrupt_image: 1 image, e.g. " in said[0], said
    assert said[1].startswith("bad data: 1 problem of 1 kind")


def test_radio_evals_second_read_of_a_folder_does_not_say_its_problems_again(tmp_path, caplog):
    write_tar(tmp_path / "a.tar", [("u.jpg", b"not an image"), ("g.jpg", image_bytes(1))])
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        for _ in range(2):  # e.g. the labelled images for the accuracy, then for the fidelity
            assert len(list(iter_image_batches(str(tmp_path), 16, batch_size=2))) == 1
    assert len(warnings(caplog)) == 2  # one kind, and the total
