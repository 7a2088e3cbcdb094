"""Views: per-step resolutions (seeded, patch-aligned, same everywhere), on-device resize + normalisation;
crops: one region per sample, reduced-size JPEG decoding for large images (libjpeg-turbo, or PIL for the rest)."""

import io
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL.JpegImagePlugin import JpegImageFile

from radio.data import crops
from radio.data.crops import CropSettings, decode_crop, random_crop_box
from radio.data.synthetic import jpeg_bytes, synthetic_image
from radio.data.views import ViewPlan, ViewSpec, align_to_patch, make_view


def test_sizes_are_patch_aligned_and_follow_the_student():
    plan = ViewPlan(
        ViewSpec("student", 224, 16, {224: 0.5, 256: 0.5}),
        [
            ViewSpec("fixed", 432, 16),
            ViewSpec("follows", 224, 14, follow="student"),
            ViewSpec("own", 224, 14, {300: 1.0}),
        ],
        seed=0,
    )
    seen = Counter()
    for step in range(200):
        sizes = plan.sizes_for_step(step)
        assert sizes["fixed"] == 432
        assert sizes["follows"] == align_to_patch(sizes["student"], 14)
        assert sizes["own"] == 294  # 300 rounded to a multiple of 14
        assert plan.max_size(step) == max(sizes.values())
        seen[sizes["student"]] += 1
    assert set(seen) == {224, 256} and 60 < seen[224] < 140


def test_stochastic_resolution_is_a_function_of_seed_and_step():
    def plan(seed):
        return ViewPlan(ViewSpec("student", 224, 16, {160: 1, 224: 1, 288: 1}), [], seed=seed)

    assert [plan(3).sizes_for_step(s) for s in range(50)] == [plan(3).sizes_for_step(s) for s in range(50)]
    assert [plan(3).sizes_for_step(s) for s in range(50)] != [plan(4).sizes_for_step(s) for s in range(50)]


def test_make_view_is_antialiased_resize_then_normalisation():
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    view = make_view(images, 32, mean, std)
    expected = F.interpolate(images.float() / 255, size=(32, 32), mode="bilinear", antialias=True)
    expected = (expected - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert view.dtype == torch.float32 and view.shape == (2, 3, 32, 32)
    assert torch.allclose(view, expected, atol=1e-5)
    # Antialiasing: a 1-pixel checkerboard averages to grey instead of aliasing to black or white.
    board = (torch.arange(64).view(1, 64) + torch.arange(64).view(64, 1)) % 2 * 255
    grey = make_view(board.to(torch.uint8).expand(1, 3, 64, 64).contiguous(), 16, [0, 0, 0], [1, 1, 1])
    assert torch.allclose(grey, torch.full_like(grey, 0.5), atol=0.02)
    same = make_view(images, 64, [0, 0, 0], [1, 1, 1])
    assert torch.equal(same, images.float() / 255)


def test_crop_box_respects_scale_and_ratio():
    rng = random.Random(0)
    for _ in range(500):
        left, top, right, bottom = random_crop_box(rng, 640, 480, (0.35, 1.0), (3 / 4, 4 / 3))
        width, height = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 640 + 1e-6 and bottom <= 480 + 1e-6
        assert 0.35 * 640 * 480 * 0.999 <= width * height <= 640 * 480 * 1.001
        assert 3 / 4 - 1e-6 <= width / height <= 4 / 3 + 1e-6


def test_large_jpegs_are_decoded_at_reduced_size(monkeypatch, turbo_calls):
    data = jpeg_bytes(synthetic_image(np.random.default_rng(0), 1600, 1200))
    decoded = turbo_calls
    settings = CropSettings(scale=(0.9, 1.0), hflip_probability=0.0)
    reduced = decode_crop(data, random.Random(1), 128, settings)
    assert decoded and max(decoded[0][:2]) <= 1600 / 4
    # Same crop decoded at full size: the reduced decode is a close approximation.
    monkeypatch.setattr(crops, "_jpeg_reduction", lambda *args: 1)
    full = decode_crop(data, random.Random(1), 128, settings)
    assert decoded[1][:2] == (1200, 1600)
    assert reduced.shape == full.shape == (128, 128, 3)
    assert np.abs(reduced.astype(float) - full.astype(float)).mean() < 6.0


def test_pil_decodes_large_jpegs_at_reduced_size_too(monkeypatch):
    """JPEGs libjpeg-turbo does not take (here: CMYK) still get PIL's reduced-size decode."""
    buffer = io.BytesIO()
    synthetic_image(np.random.default_rng(0), 1600, 1200).convert("CMYK").save(buffer, format="JPEG")
    requested = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    crop = decode_crop(buffer.getvalue(), random.Random(1), 128, CropSettings(scale=(0.9, 1.0)))
    assert requested and max(requested[0]) <= 1600 / 4 and crop.shape == (128, 128, 3)


def test_crop_is_deterministic_and_flip_mirrors_it():
    data = jpeg_bytes(synthetic_image(np.random.default_rng(1), 200, 150))
    a = decode_crop(data, random.Random(5), 64, CropSettings(hflip_probability=0.0))
    b = decode_crop(data, random.Random(5), 64, CropSettings(hflip_probability=0.0))
    flipped = decode_crop(data, random.Random(5), 64, CropSettings(hflip_probability=1.0))
    assert np.array_equal(a, b)
    assert np.array_equal(flipped, a[:, ::-1])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_images_become_rgb(mode):
    image = synthetic_image(np.random.default_rng(2), 80, 60).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert decode_crop(buffer.getvalue(), random.Random(0), 32, CropSettings()).shape == (32, 32, 3)
