"""Helpers for the data-pipeline tests: loader configs, plans, hand-made tars."""

import io
import tarfile

import numpy as np
from omegaconf import OmegaConf

from radio.config.schema import DatasetConfig, NativeResolutionFilter, TarDataSource, TrainDatasetConfig
from radio.data.synthetic import jpeg_bytes, synthetic_image
from radio.data.views import ViewPlan, ViewSpec


def make_cfg(
    roots,
    *,
    weights=None,
    batch_size=4,
    workers=0,
    max_error_rate=0.05,
    data_weight_mode="none",
    native=None,
    images_dir=None,
    **source_fields,
):
    """A structured ``DatasetConfig`` over ``roots`` (one tar source each)."""
    weights = weights or [1.0] * len(roots)
    sources = [TarDataSource(root_dir=root, scale_factor=w, **source_fields) for root, w in zip(roots, weights)]
    cfg = DatasetConfig(
        batch_size=batch_size,
        workers=workers,
        max_error_rate=max_error_rate,
        train_dataset=TrainDatasetConfig(
            tar_data_sources=sources,
            images_dir=images_dir,
            data_weight_mode=data_weight_mode,
            native_resolution_filter=native or NativeResolutionFilter(),
        ),
    )
    return OmegaConf.structured(cfg)


def small_plan(seed=0):
    return ViewPlan(ViewSpec("student", 32, 16), [ViewSpec("teacher", 28, 14)], seed=seed)


def take(loader, steps):
    """The first ``steps`` batches of a fresh iteration over ``loader``."""
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == steps:
            break
    return batches


def image_bytes(seed, width=48, height=40):
    return jpeg_bytes(synthetic_image(np.random.default_rng(seed), width, height))


def write_tar(path, members, *, gnu=False):
    """A tar with ``members`` [(name, bytes)] in order, via ``tarfile`` (``gnu``: GNU format)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT if gnu else tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
