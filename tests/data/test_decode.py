"""Crop decoding: libjpeg-turbo for colour JPEGs, PIL for everything else; both close to PIL's own
random-resized crop, deterministic, with the same drop reasons and filters."""

import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from radio.config.schema import NativeResolutionFilter
from radio.data import crops
from radio.data.crops import CropSettings, SampleDropped, decode_crop, random_crop_box
from radio.data.filters import is_near_constant
from radio.data.synthetic import jpeg_bytes, synthetic_image

KEEP_ALL = CropSettings(near_constant_std=None)


def pil_reference(data: bytes, rng: random.Random, out_size: int, settings: CropSettings) -> np.ndarray:
    """The PIL-only crop (reduced-size JPEG decode by ``Image.draft``, PIL's box resize, flip)."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    box = random_crop_box(rng, width, height, settings.scale, settings.ratio)
    flip = rng.random() < settings.hflip_probability
    if image.format == "JPEG":
        need = max(out_size / (box[2] - box[0]), out_size / (box[3] - box[1]))
        if need < 0.5:
            image.draft("RGB", (math.ceil(width * need), math.ceil(height * need)))
    image = image.convert("RGB")
    fx, fy = image.size[0] / width, image.size[1] / height
    crop = image.resize((out_size, out_size), Image.BILINEAR, box=(box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy))
    return np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("width, height, out_size", [(500, 375, 224), (1600, 1200, 224), (200, 150, 64)])
def test_jpeg_crops_match_the_pil_reference(width, height, out_size, turbo_calls):
    rng = np.random.default_rng(width)
    images = [jpeg_bytes(synthetic_image(rng, width, height)) for _ in range(3)]
    diffs = []
    for seed in range(12):
        data = images[seed % 3]
        ours = decode_crop(data, random.Random(seed), out_size, KEEP_ALL)
        reference = pil_reference(data, random.Random(seed), out_size, KEEP_ALL)
        assert ours.shape == reference.shape == (out_size, out_size, 3) and ours.dtype == np.uint8
        diffs.append(np.abs(ours.astype(np.int16) - reference.astype(np.int16)).mean())
    assert len(turbo_calls) == 12  # all decoded by libjpeg-turbo
    # Measured ~1.1 (500x375), ~0.5 (1600x1200), ~2 (200x150, upscaled) uint8 levels on these noisy images.
    assert np.mean(diffs) < 3.0 and max(diffs) < 5.0


def test_large_jpegs_are_decoded_at_the_scale_pil_draft_picks(turbo_calls):
    rng = random.Random(0)
    for width, height in [(1600, 1200), (1601, 1203), (999, 2001), (640, 480)]:
        data = jpeg_bytes(synthetic_image(np.random.default_rng(width), width, height), quality=80)
        for out_size in (64, 128, 224):
            box = random_crop_box(rng, width, height, (0.35, 1.0), (3 / 4, 4 / 3))
            need = max(out_size / (box[2] - box[0]), out_size / (box[3] - box[1]))
            image = Image.open(io.BytesIO(data))
            if need < 0.5:
                image.draft("RGB", (math.ceil(width * need), math.ceil(height * need)))
            reduction = crops._jpeg_reduction(width, height, box, out_size)
            assert image.size == (math.ceil(width / reduction), math.ceil(height / reduction))
            pixels = crops._decode_turbo(data, width, height, reduction)
            assert pixels.shape == (image.size[1], image.size[0], 3)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])  # "P": shape-only, in test_views_and_crops.py
def test_png_goes_to_pil_and_matches_the_reference(mode, turbo_calls):
    data = encoded(synthetic_image(np.random.default_rng(3), 160, 120).convert(mode), "PNG")
    ours = decode_crop(data, random.Random(4), 96, KEEP_ALL)
    reference = pil_reference(data, random.Random(4), 96, KEEP_ALL)
    assert not turbo_calls and ours.shape == (96, 96, 3)
    assert np.abs(ours.astype(np.int16) - reference.astype(np.int16)).mean() < 3.0


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpegs_go_to_pil(mode, turbo_calls):
    data = encoded(synthetic_image(np.random.default_rng(5), 640, 480).convert(mode), "JPEG", quality=90)
    ours = decode_crop(data, random.Random(6), 96, KEEP_ALL)
    reference = pil_reference(data, random.Random(6), 96, KEEP_ALL)
    assert not turbo_calls and ours.shape == (96, 96, 3)
    assert np.abs(ours.astype(np.int16) - reference.astype(np.int16)).mean() < 3.0


def test_webp_goes_to_pil():
    data = encoded(synthetic_image(np.random.default_rng(7), 120, 90), "WEBP")
    assert decode_crop(data, random.Random(0), 32, KEEP_ALL).shape == (32, 32, 3)


def test_jpegs_libjpeg_turbo_refuses_are_left_to_pil(turbo_calls):
    """A damaged entropy segment: libjpeg-turbo (strict) refuses it, PIL reads it as it always did."""
    good = jpeg_bytes(synthetic_image(np.random.default_rng(8), 200, 150))
    damaged = bytearray(good)
    damaged[len(good) // 3 : len(good) // 3 + 400] = bytes(range(200)) * 2
    ours = decode_crop(bytes(damaged), random.Random(1), 64, KEEP_ALL)
    reference = pil_reference(bytes(damaged), random.Random(1), 64, KEEP_ALL)
    assert not turbo_calls  # refused: it raised instead of returning
    assert np.abs(ours.astype(np.int16) - reference.astype(np.int16)).mean() < 3.0


def test_undecodable_bytes_are_corrupt_images():
    good = jpeg_bytes(synthetic_image(np.random.default_rng(8), 200, 150))
    for data in (
        b"\xff\xd8\xff\xe0 definitely not a jpeg",
        good[: len(good) // 2],  # a half-written JPEG
        b"\x89PNG\r\n\x1a\n truncated",
        bytes(np.random.default_rng(9).integers(0, 256, 3000, dtype=np.uint8)),
    ):
        with pytest.raises(SampleDropped) as caught:
            decode_crop(data, random.Random(0), 32, CropSettings())
        assert caught.value.reason == "error/corrupt_image"
    with pytest.raises(SampleDropped) as caught:
        decode_crop(b"", random.Random(0), 32, CropSettings())
    assert caught.value.reason == "error/empty_member"


def test_same_rng_same_bytes_and_out_is_written_in_place():
    data = jpeg_bytes(synthetic_image(np.random.default_rng(10), 500, 375))
    first = decode_crop(data, random.Random(11), 224, CropSettings(hflip_probability=1.0))
    again = decode_crop(data, random.Random(11), 224, CropSettings(hflip_probability=1.0))
    other = decode_crop(data, random.Random(12), 224, CropSettings(hflip_probability=1.0))
    assert first.tobytes() == again.tobytes() and first.tobytes() != other.tobytes()
    assert first.flags.c_contiguous
    chunk = torch.zeros((3, 224, 224, 3), dtype=torch.uint8)
    written = decode_crop(data, random.Random(11), 224, CropSettings(hflip_probability=1.0), out=chunk[1])
    assert np.shares_memory(written, chunk.numpy()) and written.tobytes() == first.tobytes()
    assert torch.equal(chunk[1], torch.from_numpy(first)) and not chunk[0].any() and not chunk[2].any()


def test_native_size_filter_sees_the_native_size_of_reduced_decodes():
    data = jpeg_bytes(synthetic_image(np.random.default_rng(13), 1600, 1200))
    strict = CropSettings(native_filter=NativeResolutionFilter(min_short_side=1201))
    with pytest.raises(SampleDropped) as caught:
        decode_crop(data, random.Random(0), 64, strict)
    assert caught.value.reason == "dropped/min_short_side"
    loose = CropSettings(native_filter=NativeResolutionFilter(min_short_side=1200))
    assert decode_crop(data, random.Random(0), 64, loose).shape == (64, 64, 3)  # decoded at 1/8 scale


def pil_nearest_verdict(pixels: np.ndarray, max_std: float) -> bool:
    """The reference: PIL's NEAREST 32x32 sample, per-channel population variance."""
    sample = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.NEAREST)).reshape(-1, 3).astype(np.float64)
    return float(sample.var(axis=0).max()) < max_std * max_std


def test_near_constant_verdict_is_the_filters_verdict():
    rng = np.random.default_rng(14)
    for width, height in [(500, 375), (33, 47), (20, 10), (1, 1), (800, 600)]:
        for spread in (0, 1, 2, 3, 4, 8, 60):
            base = rng.integers(0, 256 - spread - 1, size=3)
            pixels = (base + rng.integers(0, spread + 1, size=(height, width, 3))).astype(np.uint8)
            for max_std in (1.0, 2.0, 3.0):
                expected = pil_nearest_verdict(pixels, max_std)
                assert is_near_constant(pixels, max_std) == expected, (width, height, spread, max_std)


def test_near_constant_jpegs_are_dropped():
    flat = jpeg_bytes(Image.new("RGB", (320, 240), (90, 120, 150)))
    with pytest.raises(SampleDropped) as caught:
        decode_crop(flat, random.Random(0), 32, CropSettings())
    assert caught.value.reason == "dropped/near_constant"
