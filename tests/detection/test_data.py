"""The COCO detection loader: targets equal the JSON's boxes, exact resume, rank partition, multi-scale sizes, and
one clear SpecError per kind of bad data."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from radio.data.coco_synthetic import write_synthetic_coco
from radio.detection.data import CocoDetectionSource, DetectionTrainLoader, detection_eval_batches
from radio.errors import SpecError

NO_NORMALISATION = {"norm_mean": [0.0, 0.0, 0.0], "norm_std": [1.0, 1.0, 1.0]}


def source(split: dict, num_classes: int = 3, where: str = "dataset.train_data_sources[0]") -> CocoDetectionSource:
    return CocoDetectionSource(split["image_dir"], split["json_file"], num_classes=num_classes, where=where)


def train_loader(sources, **overrides) -> DetectionTrainLoader:
    settings = dict(
        batch_size=2,
        workers=0,
        spatial_size=(48, 48),
        multi_scales=[],
        hflip_probability=0.5,
        seed=7,
        **NO_NORMALISATION,
    )
    settings.update(overrides)
    return DetectionTrainLoader(sources, **settings)


def take(loader, count: int) -> list:
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(count)]
    iterator.close()
    return batches


def json_targets(json_file: str) -> dict:
    """image id -> (labels, normalised cx,cy,w,h boxes) computed from the JSON alone (category k+1 is label k)."""
    coco = json.load(open(json_file))
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    targets = {image_id: ([], []) for image_id in sizes}
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        width, height = sizes[annotation["image_id"]]
        targets[annotation["image_id"]][0].append(annotation["category_id"] - 1)
        targets[annotation["image_id"]][1].append([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height])
    return {k: (torch.tensor(v[0], dtype=torch.int64), torch.tensor(v[1]).reshape(-1, 4)) for k, v in targets.items()}


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert torch.equal(a.pixel_values, b.pixel_values)
        assert torch.equal(a.image_ids, b.image_ids)
        assert a.position == b.position
        for target_a, target_b in zip(a.labels, b.labels):
            assert torch.equal(target_a["class_labels"], target_b["class_labels"])
            assert torch.equal(target_a["boxes"], target_b["boxes"])


def test_targets_equal_the_json_boxes_and_a_flip_mirrors_pixels_and_boxes(coco_set):
    train = source(coco_set["train"])
    expected = json_targets(coco_set["train"]["json_file"])
    plain = {}
    for batch in detection_eval_batches(train, batch_size=4, workers=0, spatial_size=(48, 48), **NO_NORMALISATION):
        for pixels, image_id, target in zip(batch.pixel_values, batch.image_ids.tolist(), batch.labels):
            labels, boxes = expected[image_id]
            assert torch.equal(target["class_labels"], labels)
            torch.testing.assert_close(target["boxes"], boxes)
            assert target["boxes"].dtype == torch.float32
            plain[image_id] = pixels
    (batch,) = take(train_loader([train], batch_size=6, hflip_probability=1.0), 1)
    for pixels, image_id, target in zip(batch.pixel_values, batch.image_ids.tolist(), batch.labels):
        labels, boxes = expected[image_id]
        boxes[:, 0] = 1 - boxes[:, 0]
        assert torch.equal(target["class_labels"], labels)
        torch.testing.assert_close(target["boxes"], boxes)
        assert torch.equal(pixels, plain[image_id].flip(-1))


def test_pixels_are_rgb_over_255_normalised_with_mean_and_std(coco_set):
    val = source(coco_set["val"], where="dataset.val_data_sources[0]")
    with Image.open(val.paths[0]) as image:
        rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float()
    own_size = tuple(rgb.shape[1:])  # resizing to the image's own size leaves its pixels as they are
    (raw, *_) = detection_eval_batches(val, batch_size=1, workers=0, spatial_size=own_size, **NO_NORMALISATION)
    assert torch.equal(raw.pixel_values[0] * 255, rgb)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
    (normalised, *_) = detection_eval_batches(
        val, batch_size=1, workers=0, spatial_size=own_size, norm_mean=mean, norm_std=std
    )
    expected = (rgb / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(normalised.pixel_values[0], expected)


def test_eval_batches_cover_every_image_once_in_id_order_with_their_sizes(coco_set):
    val = source(coco_set["val"], where="dataset.val_data_sources[0]")
    coco = json.load(open(coco_set["val"]["json_file"]))
    batches = list(detection_eval_batches(val, batch_size=3, workers=0, spatial_size=(40, 56), **NO_NORMALISATION))
    assert [len(b.image_ids) for b in batches] == [3, 1]
    assert all(b.pixel_values.shape[1:] == (3, 40, 56) and b.position is None for b in batches)
    images = sorted(coco["images"], key=lambda image: image["id"])
    assert torch.cat([b.image_ids for b in batches]).tolist() == [image["id"] for image in images]
    assert torch.cat([b.orig_sizes for b in batches]).tolist() == [[i["height"], i["width"]] for i in images]


@pytest.mark.parametrize("workers, resumed_workers", [(0, 2), (2, 0)])
def test_resume_from_a_state_repeats_the_stream_exactly(coco_set, workers, resumed_workers):
    sources = [source(coco_set["train"])]
    scales = {"multi_scales": [32, [40, 56], 48]}
    original = take(train_loader(sources, workers=workers, **scales), 5)  # 3 batches per epoch: crosses one
    assert [b.position for b in original[1:4]] == [{"epoch": 0, "batch": 2}, {"epoch": 1, "batch": 0}] + [
        {"epoch": 1, "batch": 1}
    ]
    assert not torch.equal(original[0].image_ids, original[3].image_ids) or not torch.equal(
        original[0].pixel_values, original[3].pixel_values
    )
    resumed_loader = train_loader(sources, workers=resumed_workers, **scales)
    resumed_loader.load_state_dict(json.loads(json.dumps(original[2].position)))
    assert_same_batches(take(resumed_loader, 2), original[3:5])


def test_ranks_see_disjoint_images_covering_the_epoch_at_the_same_sizes(coco_set):
    sources = [source(coco_set["train"])]
    scales = [32, [40, 56], 48, [56, 40]]
    ranks = [train_loader(sources, batch_size=1, multi_scales=scales, rank=r, world_size=2) for r in (0, 1)]
    assert ranks[0].steps_per_epoch == 3
    batches = [take(loader, 3) for loader in ranks]
    seen = [torch.cat([b.image_ids for b in rank_batches]).tolist() for rank_batches in batches]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(sources[0].image_ids)
    for batch_0, batch_1 in zip(*batches):
        assert batch_0.pixel_values.shape[2:] == batch_1.pixel_values.shape[2:]
    sizes = [[loader.batch_spatial_size(epoch, step) for epoch in range(3) for step in range(3)] for loader in ranks]
    assert sizes[0] == sizes[1]
    assert len(set(sizes[0])) > 1
    assert [tuple(b.pixel_values.shape[2:]) for b in batches[0]] == sizes[0][:3]


def test_targets_leave_out_crowds_and_empty_boxes_clip_to_the_image_and_keep_unannotated_images(tmp_path):
    split = write_synthetic_coco(str(tmp_path), {"train": 3}, seed=1)["train"]
    coco = json.load(open(split["json_file"]))
    first, second, third = (image["id"] for image in coco["images"])
    width = coco["images"][0]["width"]
    coco["annotations"] = [
        {"id": 1, "image_id": first, "category_id": 2, "bbox": [width - 10, 0, 30, 20], "iscrowd": 0},
        {"id": 2, "image_id": first, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1},
        {"id": 4, "image_id": first, "category_id": 3, "bbox": [width + 5, 0, 10, 10]},  # outside: empty once clipped
        {"id": 3, "image_id": second, "category_id": 1, "bbox": [5, 5, 0, 10]},
    ]
    json.dump(coco, open(split["json_file"], "w"))
    train = source(split)
    assert len(train.notes) == 1 and "2 annotations" in train.notes[0] and "1 crowd" in train.notes[0]
    batches = list(detection_eval_batches(train, batch_size=3, workers=0, spatial_size=(32, 32), **NO_NORMALISATION))
    targets = dict(zip(batches[0].image_ids.tolist(), batches[0].labels))
    assert targets.keys() == {first, second, third}
    assert targets[first]["class_labels"].tolist() == [1]
    height = coco["images"][0]["height"]
    clipped = torch.tensor([[(width - 5) / width, 10 / height, 10 / width, 20 / height]])
    torch.testing.assert_close(targets[first]["boxes"], clipped)
    assert targets[second]["boxes"].shape == (0, 4) and targets[third]["class_labels"].numel() == 0


def test_category_count_and_missing_or_not_coco_files_are_spec_errors(tmp_path):
    split = write_synthetic_coco(str(tmp_path), {"train": 2}, seed=1)["train"]
    with pytest.raises(SpecError, match=r"dataset\.num_classes=5.*annotations\.json has 3 categories"):
        source(split, num_classes=5)
    with pytest.raises(SpecError, match=r"dataset\.train_data_sources\[0\]\.json_file: .*nope\.json does not exist"):
        source({**split, "json_file": str(tmp_path / "nope.json")})
    not_coco = tmp_path / "not_coco.json"
    not_coco.write_text(json.dumps({"images": []}))
    with pytest.raises(SpecError, match="not_coco.json is not a COCO detection file"):
        source({**split, "json_file": str(not_coco)})
    coco = json.load(open(split["json_file"]))
    coco["annotations"][0]["image_id"] = 999
    json.dump(coco, open(split["json_file"], "w"))
    with pytest.raises(SpecError, match="annotations.json: annotations.0. names image id 999"):
        source(split)
    coco["annotations"][0]["image_id"] = coco["images"][0]["id"]
    json.dump(coco, open(split["json_file"], "w"))
    os.remove(os.path.join(split["image_dir"], coco["images"][1]["file_name"]))
    with pytest.raises(SpecError, match=r"1 of the 2 images .* e\.g\. .*" + coco["images"][1]["file_name"]):
        source(split)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_undecodable_image_names_its_file_and_source_even_from_a_worker(tmp_path, workers):
    split = write_synthetic_coco(str(tmp_path), {"train": 4}, seed=1)["train"]
    broken = os.path.join(split["image_dir"], sorted(os.listdir(split["image_dir"]))[2])
    with open(broken, "wb") as stream:
        stream.write(b"not a jpeg at all")
    loader = train_loader([source(split)], batch_size=4, workers=workers)
    with pytest.raises(SpecError) as caught:
        take(loader, 1)
    message = str(caught.value)
    assert message.startswith("dataset.train_data_sources[0]: image ") and broken in message
    assert "cannot be decoded" in message and "Traceback" not in message


def test_too_few_images_and_malformed_states_are_refused(coco_set):
    sources = [source(coco_set["train"])]
    with pytest.raises(SpecError, match=r"6 images .* too few .*batch_size=2 x 4 processes = 8"):
        train_loader(sources, world_size=4)
    loader = train_loader(sources)
    for state in ({"epoch": 0}, {"epoch": -1, "batch": 0}, {"epoch": 0, "batch": 3}, [0, 1]):
        with pytest.raises(ValueError):
            loader.load_state_dict(state)
    with pytest.raises(SpecError, match=r"multi_scales\[1\]"):
        train_loader(sources, multi_scales=[32, [32, 0]])


def test_sources_named_alike_get_unique_names(tmp_path):
    from types import SimpleNamespace

    from radio.detection.data import coco_sources
    from radio.data.coco_synthetic import write_synthetic_coco

    first = write_synthetic_coco(str(tmp_path / "a"), {"val": 2}, seed=0, size_range=(64, 64))["val"]
    second = write_synthetic_coco(str(tmp_path / "b"), {"val": 2}, seed=1, size_range=(64, 64))["val"]
    specs = [SimpleNamespace(**first), SimpleNamespace(**second)]
    assert [s.name for s in coco_sources(specs, num_classes=3, section="val_data_sources")] == ["val", "val_2"]
