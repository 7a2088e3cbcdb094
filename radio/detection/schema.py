"""The ``task: detection`` spec as OmegaConf structured configs, with TAO's field names (docs/detection.md).

The training, logging and checkpoint sections are the backbone task's own (``radio/config/schema.py``); the
model, dataset and distill sections are a detector's.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from radio.config.schema import LoggingConfig, TrainConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class DetectorConfig:
    """One transformers detector with a timm backbone (``radio/detection/models.py`` builds it)."""

    family: str = "rtdetr"  # rtdetr | rtdetr_v2 | d_fine | deformable_detr
    backbone: str = "resnet18"  # a timm model name
    out_indices: List[int] = field(default_factory=lambda: [2, 3, 4])  # the backbone stages fed to the encoder
    pretrained_backbone_path: Optional[str] = None  # timm weights (.safetensors) for the backbone alone
    hidden_dim: int = 256  # encoder width and decoder d_model
    num_queries: int = 300
    num_denoising: int = 100  # RT-DETR family: contrastive denoising queries in training (0: none)
    encoder_layers: int = 1
    decoder_layers: int = 6
    ffn_dim: int = 1024
    attention_heads: int = 8
    config_overrides: Dict[str, Any] = field(default_factory=dict)  # any other field of the transformers config


@dataclass
class DetectionModelConfig(DetectorConfig):
    """The student: a detector, plus how it starts from and learns with its teacher."""

    load_teacher_enc_dec: bool = False  # copy the teacher's encoder/decoder tensors whose shapes match
    distillation_loss_coef: float = 1.0  # total = detection loss + coef * sum(binding weight * loss)


@dataclass
class CocoDataSource:
    image_dir: str = MISSING
    json_file: str = MISSING


@dataclass
class DetectionAugmentationConfig:
    train_spatial_size: List[int] = field(default_factory=lambda: [640, 640])  # [height, width]
    eval_spatial_size: List[int] = field(default_factory=lambda: [640, 640])
    multi_scales: List[Any] = field(default_factory=list)  # sizes (int or [h, w]) drawn per step; empty: train size
    hflip_probability: float = 0.5
    norm_mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    norm_std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class DetectionDatasetConfig:
    train_data_sources: List[CocoDataSource] = field(default_factory=list)
    val_data_sources: List[CocoDataSource] = field(default_factory=list)
    num_classes: int = MISSING
    batch_size: int = 4  # per device
    workers: int = 4
    augmentation: DetectionAugmentationConfig = field(default_factory=DetectionAugmentationConfig)


@dataclass
class DetectionTrainConfig(TrainConfig):
    validation_interval: Optional[int] = 1  # epochs between val mAP evaluations (0 or None: none)
    validation_interval_steps: Optional[int] = None


@dataclass
class BindingConfig:
    """One distillation term (TAO's ``distill.bindings``): a feature or an output of both models.

    Features (``srcs``, ``dsrcs``, ``encoder``, ``enc_output``, ``backbone`` or a module path) take L1, L2 or IOU;
    ``pred_logits`` takes KL (``distill.logits_kd_kind``) and ``pred_boxes`` L1 or GIOU, on the query pairs
    ``distill.matching`` forms.
    """

    teacher_module_name: str = MISSING
    student_module_name: Optional[str] = None  # None: the teacher's name
    criterion: str = "L2"  # L1 | L2 | IOU (features); KL (pred_logits); L1 | GIOU (pred_boxes)
    weight: float = 1.0


@dataclass
class DetectionDistillConfig:
    teacher: Optional[DetectorConfig] = None  # None: no teacher (the detection loss alone)
    pretrained_teacher_model_path: Optional[str] = None  # a saved transformers folder or a .safetensors state dict
    bindings: List[BindingConfig] = field(default_factory=list)
    matching: str = "hungarian"  # hungarian | index | gt: which student query learns from which teacher query
    logits_kd_kind: str = "sigmoid_kl"  # sigmoid_kl | sigmoid_bce | softmax_kl (TAO's DINO criterion)
    temperature: float = 1.0
    confidence_weighted: bool = True  # weigh each query pair by the teacher's top class probability
    # What the teacher is loaded and run in: bf16 | fp32; None: bf16 on GPUs, train.precision on CPU.
    teacher_precision: Optional[str] = None


@dataclass
class DetectionEvaluateConfig:
    checkpoint: Optional[str] = None
    max_detections: int = 100  # per image, by score (COCO's maxDets)


@dataclass
class DetectionRunConfig:
    task: str = "detection"
    results_dir: str = MISSING
    model: DetectionModelConfig = field(default_factory=DetectionModelConfig)
    dataset: DetectionDatasetConfig = field(default_factory=DetectionDatasetConfig)
    train: DetectionTrainConfig = field(default_factory=DetectionTrainConfig)
    distill: DetectionDistillConfig = field(default_factory=DetectionDistillConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluate: DetectionEvaluateConfig = field(default_factory=DetectionEvaluateConfig)
