"""Fixtures for the data-pipeline tests."""

import pytest
import simplejpeg

from radio.data.synthetic import write_synthetic_shards


@pytest.fixture
def turbo_calls(monkeypatch):
    """Shapes of the arrays libjpeg-turbo decoded, in call order."""
    shapes = []
    original = simplejpeg.decode_jpeg

    def spy(*args, **kwargs):
        pixels = original(*args, **kwargs)
        shapes.append(pixels.shape)
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    return shapes


@pytest.fixture(scope="session")
def two_sources(tmp_path_factory):
    """Source ``a``: 60 images in 3 shards (with json + cls); source ``b``: 30 images in 3 shards."""
    root = tmp_path_factory.mktemp("sources")
    write_synthetic_shards(str(root / "a"), 60, 20, seed=1, prefix="a", with_json=True, with_cls=True)
    write_synthetic_shards(str(root / "b"), 30, 10, seed=2, prefix="b")
    return str(root / "a"), str(root / "b")
