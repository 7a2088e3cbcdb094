"""The spec-file schema as OmegaConf structured configs.

Every field a spec may set lives here, with its default. Per-teacher fields left as ``None`` (or empty
lists) fall back to the global ``distill`` value; ``radio.run.teachers`` is the one place that applies
that fallback. OmegaConf checks types and unknown keys, ``radio.config.validate`` ranges, and
``radio.run.spec`` the enumerated fields against the modules that implement them.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class BackboneConfig:
    type: str = "c_radio_v3_vit_base_patch16_reg4_dinov2"
    pretrained_backbone_path: Optional[str] = None
    drop_path_rate: float = 0.0
    # C-RADIO knobs: None means "what the registry entry says".
    num_cls_tokens: Optional[int] = None
    num_registers: Optional[int] = None
    cpe_max_size: Optional[int] = None


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


@dataclass
class TarDataSource:
    root_dir: str = MISSING
    samples_per_file: Optional[int] = None  # a hint, checked against what is read
    steps_per_epoch: Optional[int] = None  # None: one pass over the source at the global batch size
    scale_factor: float = 1.0  # unnormalised mixture weight
    name: Optional[str] = None  # for logs; default: the root_dir's last component


@dataclass
class NativeResolutionFilter:
    """Each threshold applies only when set; there are no maximum sizes and no minimum aspect ratio."""

    min_short_side: Optional[int] = None
    min_long_side: Optional[int] = None
    min_area: Optional[int] = None
    max_aspect_ratio: Optional[float] = None


@dataclass
class TrainDatasetConfig:
    tar_data_sources: List[TarDataSource] = field(default_factory=list)
    images_dir: Optional[str] = None  # an image folder instead of shards; class sub-folders give labels
    data_weight_mode: str = "none"  # none | inv_frequency | inv_sq_frequency | inv_log_frequency
    native_resolution_filter: NativeResolutionFilter = field(default_factory=NativeResolutionFilter)
    drop_near_constant: bool = True  # drop images whose pixels are (almost) all the same
    near_constant_std: float = 2.0  # pixel std (0-255 scale) under which an image counts as constant


@dataclass
class ValDatasetConfig:
    tar_data_sources: List[TarDataSource] = field(default_factory=list)
    images_dir: Optional[str] = None


@dataclass
class AugmentationConfig:
    norm_mean: List[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    norm_std: List[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    crop_scale: List[float] = field(default_factory=lambda: [0.35, 1.0])
    crop_ratio: List[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    hflip_probability: float = 0.5
    # {resolution: probability}, drawn once per global step for the student; empty: always img_size.
    stochastic_resolutions: Dict[int, float] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    num_classes: int = 0  # 0 = feature distillation
    img_size: int = 224  # student resolution
    batch_size: int = 32  # per device
    workers: int = 8
    max_error_rate: float = 0.05  # fraction of bad samples per source above which the run stops
    device_prefetch: bool = True  # on a GPU: copy the next batch to the device while a step computes
    # Colour JPEGs decoded on the training device (nvJPEG on a GPU), not in the workers; needs
    # train_dataset.drop_near_constant=false (that filter needs the pixels in the worker).
    decode_on_device: bool = False
    train_dataset: TrainDatasetConfig = field(default_factory=TrainDatasetConfig)
    val_dataset: ValDatasetConfig = field(default_factory=ValDatasetConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class OptimConfig:
    optim: str = "adamw"  # adamw | adam | sgd | lamb
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    policy: str = "cosine"  # cosine | linear | step | multistep | constant
    warmup_epochs: Optional[float] = None
    warmup_steps: Optional[int] = None
    min_lr: float = 0.0
    # step: {step_size: int (steps), gamma: float}; multistep: {milestones: [steps], gamma: float}
    policy_params: Dict[str, Any] = field(default_factory=dict)
    # parameter-name substrings that get no weight decay (1-d tensors never do)
    skip_names: List[str] = field(default_factory=lambda: ["pos_embed", "cls_token", "reg_token"])


@dataclass
class TrainConfig:
    num_gpus: int = 1
    num_nodes: int = 1
    num_epochs: int = 1
    max_steps: Optional[int] = None  # optional cap on optimizer steps
    seed: int = 42
    precision: str = "bf16"  # bf16 | fp16 | fp32
    grad_accumulation_steps: int = 1
    clip_grad_norm: Optional[float] = 1.0  # None or 0: no clipping
    checkpoint_interval: Optional[int] = 1  # epochs
    checkpoint_interval_steps: Optional[int] = None
    keep_checkpoints: int = 3
    resume_training_checkpoint_path: Optional[str] = None  # default: newest complete one in results_dir
    compile: bool = False
    torch_threads: Optional[int] = None  # intra-op threads per process; None: cores / (processes x (workers + 1))
    log_every_n_steps: int = 10
    max_consecutive_nonfinite: int = 10  # this many non-finite losses in a row stop the run
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class TeacherBackboneConfig:
    type: str = MISSING


@dataclass
class TeacherModelConfig:
    backbone: TeacherBackboneConfig = field(default_factory=TeacherBackboneConfig)


@dataclass
class TeacherConfig:
    """One teacher. ``None``/empty fields fall back to the global ``distill`` value (``radio/run/teachers.py``)."""

    name: Optional[str] = None
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    pretrained_teacher_model_path: Optional[str] = None
    strict_loading: bool = True
    loss_type: Optional[str] = None
    loss_lambda: Optional[float] = None
    temperature: Optional[float] = None
    mode: Optional[str] = None
    input_size: Optional[int] = None
    patch_size: Optional[int] = None
    match_student_resolution: Optional[bool] = None  # default: True exactly when input_size is unset
    stochastic_resolutions: Dict[int, float] = field(default_factory=dict)
    norm_mean: List[float] = field(default_factory=list)  # empty: dataset.augmentation.norm_mean
    norm_std: List[float] = field(default_factory=list)
    summary_token_idx: Optional[int] = None  # student CLS slot whose token predicts this teacher's summary
    summary_loss_type: Optional[str] = None  # cosine | angle | ce | tangent_sphere
    summary_loss_weight: Optional[float] = None
    fd_loss_weight: Optional[float] = None
    use_mlp: Optional[bool] = None
    mlp_hidden_size: Optional[int] = None
    mlp_num_inner: Optional[int] = None
    spatial_mlp_version: Optional[str] = None  # v2 | attn
    spatial_num_inner: Optional[int] = None
    feature_normalizer: Optional[str] = None  # phi_s | standardize | none
    adaptor: Optional[str] = None  # featsharp: the teacher wrapped by a pre-trained FeatSharp upsampler
    upsampler_checkpoint: Optional[str] = None  # the FeatSharp checkpoint (docs/featsharp.md)
    do_upsample: bool = False  # false: only FeatSharp's de-biasing, on the teacher's own grid
    mosaic: int = 1  # k > 1: k x k images tiled into one teacher input (spatial teachers; docs/resolutions.md)
    teacher_compile: Optional[bool] = None  # None: distill.teacher_compile
    teacher_fp8: Optional[bool] = None  # None: distill.teacher_fp8


@dataclass
class VitDetConfig:
    prob: float = 0.0  # probability per step of windowed attention in the student
    window_sizes: List[int] = field(default_factory=lambda: [4, 8])  # in tokens
    num_global: int = 4  # blocks kept global (spread evenly over depth)
    num_windowed: Optional[int] = None  # None: every block that is not global (ViTDet's layout)


@dataclass
class PhiSConfig:
    refresh_every_n_steps: int = 100
    freeze_after_steps: Optional[int] = None  # None: keep refreshing for the whole run


@dataclass
class DistillConfig:
    # Empty with dataset.num_classes > 0: label-only training (the student's classifier on labels alone).
    teacher: List[TeacherConfig] = field(default_factory=list)
    loss_type: Optional[str] = None  # KL CE L1 L2 MSE FD CS BALANCED; None: the mode's default
    loss_lambda: float = 1.0
    temperature: float = 1.0
    mode: str = "auto"  # logits | summary | spatial | combo | auto
    summary_loss_type: str = "cosine"
    summary_loss_weight: float = 1.0
    fd_loss_weight: float = 1.0
    use_mlp: bool = True
    mlp_hidden_size: int = 1024
    mlp_num_inner: int = 1
    spatial_mlp_version: str = "v2"
    feature_normalizer: str = "phi_s"
    phi_s: PhiSConfig = field(default_factory=PhiSConfig)
    vitdet: VitDetConfig = field(default_factory=VitDetConfig)
    # Teacher-side switches (docs/benchmarks.md, "Teacher-side switches"); each teacher may override them.
    teacher_compile: bool = False  # torch.compile each teacher's forward, one graph per input shape
    teacher_fp8: bool = False  # the teachers' block Linears in float8 (torchao; GPUs with compute capability >= 8.9)
    # What every teacher is loaded and run in: bf16 | fp32; None: bf16 on GPUs, train.precision on CPU.
    teacher_precision: Optional[str] = None


@dataclass
class WandbConfig:
    enable: bool = False
    project: str = "radio"
    entity: Optional[str] = None
    name: Optional[str] = None  # None: the results_dir's folder name
    group: Optional[str] = None  # None: the folder holding results_dir
    mode: str = "online"  # online | offline
    tags: List[str] = field(default_factory=list)


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: bool = False
    progress_bar: bool = True


@dataclass
class EvaluateConfig:
    checkpoint: Optional[str] = None
    knn_k: int = 20
    knn_temperature: float = 0.07


@dataclass
class RunConfig:
    task: str = "distill"  # distill: this schema; detection: radio/detection/schema.py (radio/run/spec.py)
    results_dir: str = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
