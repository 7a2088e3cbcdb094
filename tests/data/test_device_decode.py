"""``dataset.decode_on_device``: workers plan colour JPEGs (header, filters, crop box and flip from the slot's
rng) and the device decodes them, here ``device='cpu'``. The slots, their geometry and the loader state are the
CPU path's; only the pixels differ, by a few uint8 levels (another decoder and resampler)."""

import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import radio.data.device_decode as device_decode
from radio.data.device_decode import DEVICE_DECODE_FAILED, NEUTRAL_GREY, with_device_images
from radio.data.loader import TrainLoader
from radio.data.synthetic import jpeg_bytes, synthetic_image
from radio.data.views import ViewPlan, ViewSpec
from radio.errors import SpecError
from radio.run.spec import load_run_config
from tests.conftest import REPO
from tests.data.data_helpers import make_cfg, small_plan, take, write_tar

STEPS = 6  # x 4 samples: more than one pass over the 18 usable samples below
# 64 px crops of 160-240 px images: the CPU path decodes some at full scale and some at 1/2 (crops.py); this
# path decodes at full scale. Measured over these batches: ~1.3 uint8 levels mean absolute difference over the
# deferred crops; 0.4-0.9 per crop where the CPU path decodes at full scale, 1.4-2.9 where it decodes at 1/2.
MEAN_ABS_BOUND, PER_CROP_BOUND = 2.0, 4.0
PLAN = ViewPlan(ViewSpec("student", 64, 16), [ViewSpec("teacher", 56, 14)], seed=0)


def asymmetric_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A synthetic image (vertical gradient, shapes, noise) with a left-to-right ramp added, so that a
    mirrored crop differs from the crop by tens of levels."""
    pixels = np.asarray(synthetic_image(rng, width, height)).astype(np.int16)
    pixels[..., 0] = pixels[..., 0] // 2 + np.linspace(0, 127, width, dtype=np.int16)[None, :]
    return Image.fromarray(pixels.astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def without_quantization_tables(data: bytes) -> bytes:
    """The JPEG with its DQT segments removed: its header and EOI are fine, no decoder can read it."""
    out, index = bytearray(data[:2]), 2
    while data[index + 1] != 0xDA:  # up to the start of scan, marker segment by marker segment
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        if data[index + 1] != 0xDB:
            out += data[index : index + 2 + length]
        index += 2 + length
    return bytes(out + data[index:])


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    """20 samples: colour JPEGs, PNGs (every 5th), grayscale JPEGs (every 7th) and one truncated JPEG."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    members, kinds = [], {}
    for index in range(20):
        image = asymmetric_image(rng, int(rng.integers(160, 240)), int(rng.integers(160, 240)))
        key = f"s{index:02d}"
        if index == 3:
            data, kinds[key] = jpeg_bytes(image)[:900], "truncated"
        elif index % 5 == 0:
            data, kinds[key] = png_bytes(image), "png"
        elif index % 7 == 0:
            data, kinds[key] = jpeg_bytes(image.convert("L")), "gray"
        else:
            data, kinds[key] = jpeg_bytes(image), "colour"
        members.append((f"{key}.{'png' if kinds[key] == 'png' else 'jpg'}", data))
    write_tar(root / "part-0.tar", members[:10])
    write_tar(root / "part-1.tar", members[10:])
    return str(root), kinds


def loader_for(roots, *, on_device: bool, workers: int = 0, seed: int = 3) -> TrainLoader:
    cfg = make_cfg(roots, workers=workers)
    cfg.decode_on_device = on_device
    cfg.train_dataset.drop_near_constant = False
    return TrainLoader(cfg, PLAN, seed=seed, rank=0, world_size=1)


def decoded_batches(loader, steps):
    """The first ``steps`` batches, each decoded before the next is read (as the training step does)."""
    batches = []
    for batch in loader:
        batches.append(with_device_images(batch, batch.images.to("cpu")))
        if len(batches) == steps:
            return batches


@pytest.fixture(scope="module")
def both_paths(mixed_root):
    root, _ = mixed_root
    cpu = take(loader_for([root], on_device=False), STEPS)
    deferred = take(loader_for([root], on_device=True), STEPS)
    plans = [batch.deferred for batch in deferred]
    return cpu, [with_device_images(batch, batch.images.to("cpu")) for batch in deferred], plans


def kind_of(key, kinds):
    return kinds[key.rsplit(":", 1)[1]]


def test_the_same_samples_fill_the_same_slots_with_the_same_loader_state(both_paths):
    cpu, device, _ = both_paths
    for a, b in zip(cpu, device):
        assert a.keys == b.keys and a.step == b.step and a.sizes == b.sizes
        assert torch.equal(a.sources, b.sources) and torch.equal(a.labels, b.labels)
        assert a.position == b.position and a.counters == b.counters
        assert b.deferred is None and b.images.dtype == torch.uint8 and b.images.shape == a.images.shape


def test_only_colour_jpegs_are_deferred_and_the_rest_are_decoded_as_before(both_paths, mixed_root):
    _, kinds = mixed_root
    cpu, device, plans = both_paths
    for a, b, plan in zip(cpu, device, plans):
        deferred = {jpeg.position for jpeg in plan.jpegs}
        assert deferred == {slot for slot, key in enumerate(b.keys) if kind_of(key, kinds) == "colour"}
        for slot in set(range(len(b.keys))) - deferred:  # PNG and grayscale JPEG: the CPU path, bit for bit
            assert kind_of(b.keys[slot], kinds) in ("png", "gray")
            assert torch.equal(a.images[slot], b.images[slot])
    assert any(kind_of(key, kinds) == "png" for batch in device for key in batch.keys)


def test_device_crops_match_the_cpu_crops_within_a_few_levels_and_flip_alike(both_paths):
    cpu, device, plans = both_paths
    differences, flips = [], []
    for a, b, plan in zip(cpu, device, plans):
        for jpeg in plan.jpegs:
            ours, reference = b.images[jpeg.position].float(), a.images[jpeg.position].float()
            difference = (ours - reference).abs().mean().item()
            mirrored = (ours.flip(-1) - reference).abs().mean().item()
            assert difference < mirrored / 3, f"slot {jpeg.position} of step {b.step}: flip or crop box differs"
            differences.append(difference)
            flips.append(jpeg.flip)
    assert any(flips) and not all(flips)  # both geometries were compared
    assert max(differences) <= PER_CROP_BOUND
    assert sum(differences) / len(differences) <= MEAN_ABS_BOUND


def test_a_truncated_jpeg_is_dropped_in_the_worker_as_on_the_cpu_path(both_paths, mixed_root):
    _, kinds = mixed_root
    cpu, device, _ = both_paths
    assert not any(kind_of(key, kinds) == "truncated" for batch in device for key in batch.keys)
    assert device[-1].counters["error/corrupt_image"] == cpu[-1].counters["error/corrupt_image"] >= 1


def test_a_restored_state_continues_with_the_same_batches(mixed_root):
    root, _ = mixed_root
    uninterrupted = decoded_batches(loader_for([root], on_device=True), STEPS)
    first = loader_for([root], on_device=True)
    decoded_batches(first, 2)
    resumed = loader_for([root], on_device=True)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for a, b in zip(decoded_batches(resumed, STEPS - 2), uninterrupted[2:]):
        assert a.keys == b.keys and a.position == b.position
        assert torch.equal(a.images, b.images)


@pytest.mark.slow  # DataLoader worker processes
def test_two_workers_yield_the_in_process_batches(two_sources):
    alone = decoded_batches(loader_for(two_sources, on_device=True), 4)
    with_workers = decoded_batches(loader_for(two_sources, on_device=True, workers=2), 4)
    for a, b in zip(alone, with_workers):
        assert a.keys == b.keys and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, b.images)  # each chunk's deferred bytes reach their own slots


@pytest.fixture
def one_unreadable_jpeg(tmp_path):
    """8 colour JPEGs; ``bad`` (the third) has no quantization tables: it passes the header checks only."""
    rng = np.random.default_rng(1)
    members = [(f"ok{index}.jpg", jpeg_bytes(synthetic_image(rng, 64, 64))) for index in range(8)]
    members[2] = ("bad.jpg", without_quantization_tables(members[2][1]))
    write_tar(tmp_path / "part-0.tar", members)
    return str(tmp_path)


def test_a_jpeg_no_decoder_reads_gets_a_neutral_crop_counted_and_said(one_unreadable_jpeg, caplog):
    with caplog.at_level(logging.WARNING, logger="radio.data"):
        batches = decoded_batches(loader_for([one_unreadable_jpeg], on_device=True, seed=0), 3)
    slots = [(step, slot) for step, b in enumerate(batches) for slot, key in enumerate(b.keys) if key.endswith(":bad")]
    step, slot = slots[0]
    assert torch.all(batches[step].images[slot] == NEUTRAL_GREY)
    for later in batches[step:]:  # cumulative, in the counters and in the state a checkpoint saves
        assert later.counters[DEVICE_DECODE_FAILED] == len([s for s in slots if s[0] <= later.step])
        assert later.position["counters"][DEVICE_DECODE_FAILED] == later.counters[DEVICE_DECODE_FAILED]
    said = [r.getMessage() for r in caplog.records if DEVICE_DECODE_FAILED in r.getMessage()]
    assert len(said) == 1 and "bad" in said[0]
    # The CPU path drops it in the worker instead (its slot goes to the next sample).
    cpu = take(loader_for([one_unreadable_jpeg], on_device=False, seed=0), 3)
    assert not any(key.endswith(":bad") for b in cpu for key in b.keys) and cpu[-1].counters["error/corrupt_image"]


def test_a_jpeg_the_device_refuses_is_decoded_by_pil(mixed_root, monkeypatch):
    root, _ = mixed_root
    expected = decoded_batches(loader_for([root], on_device=True), 2)

    def refuses(*args, **kwargs):
        raise RuntimeError("nvJPEG: unsupported")

    monkeypatch.setattr(device_decode, "decode_jpeg", refuses)
    fallback = decoded_batches(loader_for([root], on_device=True), 2)
    for a, b in zip(fallback, expected):
        assert DEVICE_DECODE_FAILED not in a.counters
        assert (a.images.float() - b.images.float()).abs().mean() <= 1.0  # PIL's libjpeg, same resize


def test_the_near_constant_filter_and_device_decoding_are_refused_together(two_sources):
    quickstart = os.path.join(REPO, "specs", "quickstart.yaml")
    with pytest.raises(SpecError) as info:
        load_run_config(quickstart, ["dataset.decode_on_device=true"])
    message = str(info.value)
    assert "dataset.decode_on_device" in message and "dataset.train_dataset.drop_near_constant=false" in message
    load_run_config(quickstart, ["dataset.decode_on_device=true", "dataset.train_dataset.drop_near_constant=false"])
    cfg = make_cfg(two_sources)
    cfg.decode_on_device = True
    with pytest.raises(SpecError, match="drop_near_constant"):
        TrainLoader(cfg, small_plan(), seed=0, rank=0, world_size=1)


@pytest.mark.slow  # trains a few steps
def test_a_run_decodes_its_jpegs_in_the_training_step(demo_assets, tmp_path, monkeypatch):
    from radio.engine.loop import run
    from tests.conftest import tiny_run_overrides

    decoded = []
    original = device_decode.decode_jpeg

    def counting(data, **kwargs):
        decoded.append(len(data))
        return original(data, **kwargs)

    monkeypatch.setattr(device_decode, "decode_jpeg", counting)
    overrides = ["dataset.decode_on_device=true", "dataset.train_dataset.drop_near_constant=false"]
    spec = os.path.join(REPO, "specs", "quickstart.yaml")
    result = run(load_run_config(spec, tiny_run_overrides(demo_assets, str(tmp_path / "r"), *overrides)))
    assert result.steps == 4 and sum(decoded) == 4 * 4  # every demo image is a colour JPEG: batch 4, 4 steps


def test_running_out_of_device_memory_stops_the_run_instead_of_greying_crops(monkeypatch):
    import radio.data.device_decode as device_decode

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(device_decode, "decode_jpeg", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        device_decode._decode_all([torch.zeros(4, dtype=torch.uint8)], torch.device("cpu"))
