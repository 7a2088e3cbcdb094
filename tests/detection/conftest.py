"""Tiny transformers detectors (random weights, no download) and a synthetic COCO set for the detection tests."""

import pytest
import torch


def tiny_rtdetr(seed: int = 0, hidden: int = 32, num_queries: int = 12, num_labels: int = 3):
    """An RT-DETR with timm's 200k-parameter ``test_convnext`` backbone (strides 8/16/32, widths 32/48/64):
    ``hidden`` is both the encoder width (the ``srcs`` width) and the decoder's ``d_model``."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, TimmBackboneConfig

    torch.manual_seed(seed)
    config = RTDetrConfig(
        backbone_config=TimmBackboneConfig(backbone="test_convnext", out_indices=[1, 2, 3]),
        encoder_in_channels=[32, 48, 64],
        encoder_hidden_dim=hidden,
        d_model=hidden,
        decoder_in_channels=[hidden] * 3,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        decoder_layers=2,
        num_queries=num_queries,
        num_denoising=8,
        num_labels=num_labels,
    )
    return RTDetrForObjectDetection(config)


def tiny_deformable_detr(seed: int = 0, hidden: int = 32, num_queries: int = 12, num_labels: int = 3):
    """A Deformable DETR (box refine, single stage) on the same ``test_convnext`` backbone."""
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, TimmBackboneConfig

    torch.manual_seed(seed)
    config = DeformableDetrConfig(
        backbone_config=TimmBackboneConfig(backbone="test_convnext", out_indices=[1, 2, 3]),
        d_model=hidden,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_feature_levels=3,
        num_queries=num_queries,
        num_labels=num_labels,
        with_box_refine=True,
    )
    return DeformableDetrForObjectDetection(config)


def detection_labels():
    """Ground truth of a batch of two images in transformers' format (normalised cx, cy, w, h)."""
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


@pytest.fixture(scope="session")
def coco_set(tmp_path_factory):
    """A 3-class synthetic COCO set: 6 train and 4 val images, written once per session."""
    from radio.data.coco_synthetic import write_synthetic_coco

    return write_synthetic_coco(str(tmp_path_factory.mktemp("coco")), {"train": 6, "val": 4}, seed=3)
