"""`radio data preview`, `radio shards write`, image-folder sources and the synthetic shard writer."""

import json
import os

import numpy as np
import pytest
import webdataset as wds

from tests.data.data_helpers import image_bytes, make_cfg, small_plan, take
from radio.cli import main as radio_main
from radio.data.loader import TrainLoader
from radio.data.synthetic import write_synthetic_shards

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(REPO, "specs", "quickstart.yaml")


def preview_json(capsys, two_sources, *args):
    overrides = [
        "results_dir=/tmp/unused",
        f"dataset.train_dataset.tar_data_sources.0.root_dir={two_sources[0]}",
        f"dataset.train_dataset.tar_data_sources.1.root_dir={two_sources[1]}",
        "dataset.train_dataset.tar_data_sources.0.samples_per_file=20",
        "dataset.train_dataset.tar_data_sources.1.samples_per_file=10",
        "dataset.batch_size=3",
    ]
    assert radio_main(["data", "preview", "-e", SPEC, "--workers", "0", "--json", *args, *overrides]) == 0
    return json.loads(capsys.readouterr().out)


def keys_by_step(report):
    return {step["step"]: [s["key"] for s in step["samples"]] for step in report["steps"]}


def test_preview_start_step_matches_the_uninterrupted_preview(capsys, two_sources):
    full = preview_json(capsys, two_sources, "--steps", "8")
    later = preview_json(capsys, two_sources, "--steps", "4", "--start-step", "4")
    assert sorted(keys_by_step(full)) == list(range(8))
    assert keys_by_step(later) == {k: v for k, v in keys_by_step(full).items() if k >= 4}
    mixture = full["mixture"]
    assert mixture["source_a"]["requested"] == pytest.approx(2 / 3)
    assert abs(mixture["source_a"]["samples"] - 24 * 2 / 3) <= 2
    assert full["counters"]["read/samples"] >= 24


def test_preview_ranks_read_disjoint_samples_and_text_output_reports_mixture(capsys, two_sources):
    ranks = [preview_json(capsys, two_sources, "--steps", "3", "--world-size", "2", "--rank", str(r)) for r in (0, 1)]
    keys = [{s["key"] for step in r["steps"] for s in step["samples"]} for r in ranks]
    assert len(keys[0]) == len(keys[1]) == 9 and not keys[0] & keys[1]
    overrides = [f"dataset.train_dataset.tar_data_sources.{i}.root_dir={root}" for i, root in enumerate(two_sources)]
    assert (
        radio_main(
            ["data", "preview", "-e", SPEC, "--steps", "2", "--workers", "0", "results_dir=/tmp/unused", *overrides]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "step 1" in text and "source_a" in text and "mixture over these steps" in text


def test_preview_rejects_a_rank_outside_the_world(capsys):
    assert radio_main(["data", "preview", "-e", SPEC, "--world-size", "2", "--rank", "2"]) != 0
    assert "--rank" in capsys.readouterr().err


@pytest.fixture()
def image_folder(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        os.makedirs(tmp_path / "images" / name)
        for i in range(5):
            (tmp_path / "images" / name / f"{i}.jpg").write_bytes(image_bytes(10 * label + i))
    return str(tmp_path / "images")


def test_shards_write_packs_a_folder_with_labels(tmp_path, image_folder):
    out = str(tmp_path / "shards")
    assert radio_main(["shards", "write", image_folder, out, "--maxcount", "4"]) == 0
    samples = list(wds.WebDataset(sorted(os.path.join(out, f) for f in os.listdir(out)), shardshuffle=False))
    assert len(samples) == 10 and len(os.listdir(out)) == 3
    labels = {json.loads(s["json"])["path"]: int(s["cls"]) for s in samples}
    assert labels[os.path.join("cat", "0.jpg")] == 0 and labels[os.path.join("dog", "4.jpg")] == 1
    written = {f"{os.path.basename(s['__url__'])}:{s['__key__']}": int(s["cls"]) for s in samples}
    batches = take(TrainLoader(make_cfg([out], batch_size=5), small_plan(), seed=0, rank=0, world_size=1), 2)
    loaded = {k: label for b in batches for k, label in zip(b.keys, b.labels.tolist())}
    assert loaded == written  # the first pass reads each of the 10 samples once


def test_image_folder_source_gives_class_labels(image_folder):
    cfg = make_cfg([], images_dir=image_folder, batch_size=5)
    loader = TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)
    assert loader.source_names == ["images"] and loader.steps_per_epoch == 2
    batches = take(loader, 2)
    labels = {k: l for b in batches for k, l in zip(b.keys, b.labels.tolist())}
    assert len(labels) == 10
    assert all(labels[k] == (0 if k.startswith("cat") else 1) for k in labels)


def test_synthetic_shards_are_varied_webdataset_shards(tmp_path):
    paths = write_synthetic_shards(str(tmp_path), 12, 5, seed=3, with_json=True, with_cls=True, size_range=(40, 60))
    assert [os.path.basename(p) for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples = list(wds.WebDataset(paths, shardshuffle=False).decode("rgb"))
    assert len(samples) == 12 and {"jpg", "json", "cls"} <= set(samples[0])
    colours = np.array([np.asarray(s["jpg"]).reshape(-1, 3).mean(0) for s in samples])  # 0-1 scale
    assert colours.std(axis=0).min() > 0.05  # images differ in colour, not only in noise
    assert all(40 <= np.asarray(s["jpg"]).shape[i] <= 60 for s in samples for i in (0, 1))
    other = write_synthetic_shards(str(tmp_path / "other"), 2, 5, seed=4)
    first = list(wds.WebDataset(other, shardshuffle=False).decode("rgb"))[0]["jpg"]
    assert not np.array_equal(np.asarray(first), np.asarray(samples[0]["jpg"]))


def test_make_shards_tool_is_the_shards_write_command(tmp_path, image_folder):
    import runpy

    tool = runpy.run_path(os.path.join(REPO, "tools", "make_shards.py"))
    assert tool["main"]([image_folder, str(tmp_path / "out"), "--maxcount", "6", "--no-labels"]) == 0
    samples = list(wds.WebDataset(sorted(str(p) for p in (tmp_path / "out").iterdir()), shardshuffle=False))
    assert len(samples) == 10 and not any("cls" in s for s in samples)


def test_preview_shows_each_views_size_per_step_and_how_a_mosaic_teacher_sees_it(capsys, two_sources):
    mix = ["dataset.augmentation.stochastic_resolutions={48: 0.5, 64: 0.5}", "distill.teacher.1.mosaic=2"]
    report = preview_json(capsys, two_sources, "--steps", "6", *mix)
    sizes = [step["sizes"] for step in report["steps"]]
    assert {s["student"] for s in sizes} == {48, 64}  # drawn per step
    assert all(s["demo_a"] == s["student"] for s in sizes)  # follows the student
    assert all(s["demo_b"] == 56 for s in sizes)  # 112 px input = 2x2 tiles of 56 px views
    assert "2x2 mosaic" in report["teacher_inputs"]["demo_b"]
    overrides = [f"dataset.train_dataset.tar_data_sources.{i}.root_dir={root}" for i, root in enumerate(two_sources)]
    args = ["data", "preview", "-e", SPEC, "--steps", "1", "--workers", "0", "results_dir=/tmp/unused"]
    assert radio_main([*args, *overrides, *mix]) == 0
    text = capsys.readouterr().out
    assert "demo_b=56" in text and "demo_b: 2x2 mosaic" in text
