"""Mosaic teacher inputs: tiles land where unpack looks for them, and padding never reaches a sample."""

import pytest
import torch

from radio.data.mosaic import mosaic_pack, mosaic_unpack


def patch_means(x: torch.Tensor, patch: int) -> torch.Tensor:
    """A stand-in teacher whose token (i, j) sees only its own patch: [N,3,H,W] -> [N,3,H/p,W/p]."""
    return torch.nn.functional.avg_pool2d(x, patch)


@pytest.mark.parametrize("batch", [4, 5, 8])
def test_unpacking_a_patch_local_teacher_gives_each_sample_its_own_map(batch):
    views = torch.randn(batch, 3, 32, 32)
    packed = mosaic_pack(views, 2)
    assert packed.shape == (-(-batch // 4), 3, 64, 64)
    per_sample = mosaic_unpack(patch_means(packed, 8), 2, batch)
    torch.testing.assert_close(per_sample, patch_means(views, 8))


def test_tile_order_is_row_major_within_a_mosaic():
    views = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    packed = mosaic_pack(views, 2)[0, 0]
    assert packed.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_padding_tiles_are_zero_and_dropped():
    views = torch.ones(5, 3, 4, 4)
    packed = mosaic_pack(views, 2)
    assert packed[1, :, :4, :4].eq(1).all() and packed[1, :, :, 4:].eq(0).all() and packed[1, :, 4:].eq(0).all()
    assert mosaic_unpack(packed, 2, 5).shape == (5, 3, 4, 4)


def test_a_map_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="does not split into 2x2"):
        mosaic_unpack(torch.zeros(1, 8, 5, 5), 2, 4)


def test_k_one_is_the_identity():
    views = torch.randn(3, 3, 8, 8)
    assert mosaic_pack(views, 1) is views and mosaic_unpack(views, 1, 3) is views
