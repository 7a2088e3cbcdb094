"""PCA pictures and the deterministic eval image reader (folders with classes, shards with .cls)."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from radio.data.synthetic import write_synthetic_shards
from radio.errors import DataError
from radio.eval.images import ReadStats, iter_image_batches
from radio.eval.pca import pca_rgb, save_pca_grid
from tests.data.data_helpers import image_bytes, write_tar


def test_first_component_separates_two_regions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    fmap = torch.empty(2, 32, 6, 6)
    fmap[:, :, :, :3] = a.view(1, 32, 1, 1)
    fmap[:, :, :, 3:] = b.view(1, 32, 1, 1)
    fmap += 0.01 * torch.randn(fmap.shape, generator=g)
    rgb = pca_rgb(fmap)
    assert rgb.shape == (2, 6, 6, 3) and rgb.min() >= 0 and rgb.max() <= 1
    left, right = rgb[..., :3, 0], rgb[..., 3:, 0]
    assert (left - right.mean()).abs().min() > 0.8 or (right - left.mean()).abs().min() > 0.8


def test_pca_grid_png_has_a_column_per_image(tmp_path):
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    path = str(tmp_path / "pca.png")
    save_pca_grid(images, pca_rgb(torch.randn(3, 8, 4, 4)), path)
    width, height = Image.open(path).size
    assert width == 3 * 2 * 80 and height == 4 * 80  # figsize (2 per image, 4) inches at 80 dpi


def test_folder_classes_give_sorted_labels_and_corrupt_files_are_skipped(tmp_path):
    for cls, colour in (("cat", 10), ("dog", 200)):
        os.makedirs(tmp_path / cls)
        for i in range(2):
            Image.fromarray(np.full((40, 60, 3), colour, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not an image")
    stats = ReadStats()
    batches = list(iter_image_batches(str(tmp_path), 32, batch_size=3, stats=stats))
    images = torch.cat([b for b, _ in batches])
    labels = torch.cat([lab for _, lab in batches])
    assert [b.shape[0] for b, _ in batches] == [3, 1]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1]
    assert images[0].float().mean() == pytest.approx(10, abs=1) and images[3].float().mean() == pytest.approx(
        200, abs=1
    )
    assert stats.images == 4 and stats.skipped == 1


def test_shard_labels_come_from_cls_members(tmp_path):
    import webdataset as wds

    write_synthetic_shards(str(tmp_path), 6, 4, seed=3, with_cls=True, num_classes=3)
    expected = [
        int(s["cls"]) for s in wds.WebDataset(sorted(str(p) for p in tmp_path.glob("*.tar")), shardshuffle=False)
    ]
    labels = torch.cat([lab for _, lab in iter_image_batches(str(tmp_path), 16, batch_size=4, max_images=5)])
    assert labels.tolist() == expected[:5]


def test_bad_shard_data_is_logged_and_skipped(tmp_path, caplog):
    """The eval reader reads shards through the training loader's shard reader: the same problems, skipped."""
    write_tar(
        tmp_path / "a.tar",
        [("ok.jpg", image_bytes(1)), ("ok.cls", b"2"), ("nolabel.jpg", image_bytes(2)), ("nolabel.cls", b"x")],
    )
    write_tar(tmp_path / "b.tar", [("text.txt", b"no image"), ("cut0.jpg", image_bytes(3)), ("cut1.jpg", b"y" * 4000)])
    with open(tmp_path / "b.tar", "r+b") as stream:
        stream.truncate(os.path.getsize(tmp_path / "b.tar") // 2)
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        labels = torch.cat([lab for _, lab in iter_image_batches(str(tmp_path), 16, batch_size=8)])
    assert labels.tolist() == [2, -1, -1]  # ok, nolabel (its .cls is not an integer), cut0 (before the damage)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "error/bad_cls" in logged and "error/truncated_tar" in logged and "no_image" not in logged


def test_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        list(iter_image_batches(str(tmp_path), 16, batch_size=4))
