"""Semantic checks on a merged spec, run before anything heavy starts.

OmegaConf already rejected unknown keys and wrong types; this module checks ranges, lengths, registry
names and cross-field rules (``radio.run.spec`` adds the choices each component implements). File-system
checks (checkpoints, shard folders) live in ``radio/run/spec.check_paths`` so ``--print-config`` works on
a spec whose paths are placeholders.
"""

from typing import Iterable, Optional, Sequence

from radio.errors import SpecError

ADAPTORS = ("featsharp",)


def check_choice(path: str, value: Optional[str], allowed: Sequence[str], *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        raise SpecError(f"{path}={value!r} is not valid; use one of: {', '.join(allowed)}.")


def check_positive(path: str, value, *, allow_zero: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SpecError(f"{path}={value!r} is not valid; it must be {bound}.")


def check_length(path: str, values: Sequence, lengths: Iterable[int]) -> None:
    lengths = tuple(lengths)
    if len(values) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise SpecError(f"{path} has {len(values)} values {list(values)}; it needs {want}.")


def check_probability(path: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"{path}={value!r} is not valid; it must be a probability in [0, 1].")


def _resolution_map(path: str, mapping) -> None:
    for res, prob in mapping.items():
        if int(res) <= 0 or prob < 0:
            raise SpecError(f"{path} entry {res}: {prob} is not valid; use {{resolution > 0: probability >= 0}}.")
    total = sum(mapping.values())
    if mapping and abs(total - 1.0) > 1e-6:
        raise SpecError(f"{path} probabilities sum to {total:g}; they must sum to 1 (e.g. {{224: 0.5, 448: 0.5}}).")


def check_decode_on_device(ds) -> None:
    """``dataset.decode_on_device`` leaves JPEG decoding to the training device, but the near-constant filter
    needs the pixels in the DataLoader worker, where a dropped sample's slot goes to the next sample (on the
    device the slot is already taken). Also called by the loader (``data/loader.py``) for unvalidated configs."""
    if ds.decode_on_device and ds.train_dataset.drop_near_constant:
        raise SpecError(
            "dataset.decode_on_device=true cannot be used with dataset.train_dataset.drop_near_constant=true: the "
            "near-constant filter needs decoded pixels in the DataLoader worker, which no longer decodes the "
            "JPEGs. Set dataset.train_dataset.drop_near_constant=false, or dataset.decode_on_device=false."
        )


def validate_config(cfg) -> None:
    """Raise ``SpecError`` on the first problem: ranges, lengths, registry names and cross-field rules.

    Choices that a component implements (optimizers, precisions, heads ...) are checked against that
    component's own declaration by ``radio.run.spec``, which also resolves every teacher.
    """
    from radio.models.registry import UnknownModelError, get_model_info

    ds, train, distill = cfg.dataset, cfg.train, cfg.distill
    if not str(cfg.results_dir).strip():
        raise SpecError("results_dir is empty; give the output folder, e.g. results_dir=/out/run1.")

    try:
        student = get_model_info(cfg.model.backbone.type)
    except UnknownModelError as exc:
        raise SpecError(f"model.backbone.type: {exc}") from None
    if not student.is_student:
        raise SpecError(
            f"model.backbone.type={cfg.model.backbone.type!r} cannot be the student: use a C-RADIO entry "
            "(c_radio_v3_vit_{base,large,huge}_patch16_reg4_dinov2, ...; `radio models 'c_radio*'`)."
        )
    backbone = cfg.model.backbone
    check_positive("model.backbone.drop_path_rate", backbone.drop_path_rate, allow_zero=True)
    check_positive("model.backbone.num_cls_tokens", backbone.num_cls_tokens, optional=True)
    check_positive("model.backbone.num_registers", backbone.num_registers, allow_zero=True, optional=True)
    if backbone.cpe_max_size is not None and backbone.cpe_max_size < student.patch_size:
        raise SpecError(
            f"model.backbone.cpe_max_size={backbone.cpe_max_size} is not valid; it must be at least the patch "
            f"size {student.patch_size} (C-RADIO uses 2048)."
        )

    check_positive("dataset.img_size", ds.img_size)
    if ds.img_size % student.patch_size:
        raise SpecError(
            f"dataset.img_size={ds.img_size} is not a multiple of the student's patch size {student.patch_size}."
        )
    check_positive("dataset.batch_size", ds.batch_size)
    check_positive("dataset.workers", ds.workers, allow_zero=True)
    check_probability("dataset.max_error_rate", ds.max_error_rate)
    check_positive("dataset.num_classes", ds.num_classes, allow_zero=True)
    _validate_sources(ds.train_dataset, "dataset.train_dataset", required=True)
    nrf = ds.train_dataset.native_resolution_filter
    for name in ("min_short_side", "min_long_side", "min_area", "max_aspect_ratio"):
        check_positive(f"dataset.train_dataset.native_resolution_filter.{name}", getattr(nrf, name), optional=True)
    if nrf.max_aspect_ratio is not None and nrf.max_aspect_ratio < 1:
        raise SpecError(
            f"dataset.train_dataset.native_resolution_filter.max_aspect_ratio={nrf.max_aspect_ratio} is not valid; "
            "it is long side / short side, so it must be >= 1."
        )
    _validate_sources(ds.val_dataset, "dataset.val_dataset", required=False)
    check_decode_on_device(ds)

    aug = ds.augmentation
    check_length("dataset.augmentation.norm_mean", aug.norm_mean, [3])
    check_length("dataset.augmentation.norm_std", aug.norm_std, [3])
    if min(aug.norm_std) <= 0:
        raise SpecError(f"dataset.augmentation.norm_std={list(aug.norm_std)} must be positive.")
    check_length("dataset.augmentation.crop_scale", aug.crop_scale, [2])
    if not 0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1:
        raise SpecError(
            f"dataset.augmentation.crop_scale={list(aug.crop_scale)} must be [low, high] with 0 < low <= high <= 1."
        )
    check_length("dataset.augmentation.crop_ratio", aug.crop_ratio, [2])
    if not 0 < aug.crop_ratio[0] <= aug.crop_ratio[1]:
        raise SpecError(
            f"dataset.augmentation.crop_ratio={list(aug.crop_ratio)} must be [low, high] with 0 < low <= high."
        )
    check_probability("dataset.augmentation.hflip_probability", aug.hflip_probability)
    _resolution_map("dataset.augmentation.stochastic_resolutions", aug.stochastic_resolutions)
    for res in aug.stochastic_resolutions:
        if int(res) % student.patch_size:
            raise SpecError(
                f"dataset.augmentation.stochastic_resolutions has {res}, not a multiple of the student's patch "
                f"size {student.patch_size}."
            )

    validate_train(train)

    if not distill.teacher and ds.num_classes <= 0:
        raise SpecError(
            "distill.teacher is empty and dataset.num_classes is 0, so the run has nothing to learn from: list at "
            "least one teacher (model.backbone.type + pretrained_teacher_model_path), or set dataset.num_classes "
            "to the number of classes for label-only training (the student's classifier on the labels alone)."
        )
    check_probability("distill.vitdet.prob", distill.vitdet.prob)
    for i, w in enumerate(distill.vitdet.window_sizes):
        check_positive(f"distill.vitdet.window_sizes[{i}]", w)
    check_positive("distill.phi_s.refresh_every_n_steps", distill.phi_s.refresh_every_n_steps)
    check_positive("distill.phi_s.freeze_after_steps", distill.phi_s.freeze_after_steps, optional=True)
    check_positive("distill.temperature", distill.temperature)
    check_positive("distill.loss_lambda", distill.loss_lambda, allow_zero=True)
    check_positive("distill.summary_loss_weight", distill.summary_loss_weight, allow_zero=True)
    check_positive("distill.fd_loss_weight", distill.fd_loss_weight, allow_zero=True)
    check_positive("distill.vitdet.num_global", distill.vitdet.num_global, allow_zero=True)
    check_positive("distill.vitdet.num_windowed", distill.vitdet.num_windowed, allow_zero=True, optional=True)
    check_positive("evaluate.knn_k", cfg.evaluate.knn_k)
    check_positive("evaluate.knn_temperature", cfg.evaluate.knn_temperature)
    check_positive("distill.mlp_hidden_size", distill.mlp_hidden_size)
    check_positive("distill.mlp_num_inner", distill.mlp_num_inner, allow_zero=True)

    for i, teacher in enumerate(distill.teacher):
        path = f"distill.teacher[{i}]"
        try:
            get_model_info(teacher.model.backbone.type)
        except UnknownModelError as exc:
            raise SpecError(f"{path}.model.backbone.type: {exc}") from None
        check_length(f"{path}.norm_mean", teacher.norm_mean, [0, 3])
        check_length(f"{path}.norm_std", teacher.norm_std, [0, 3])
        check_positive(f"{path}.input_size", teacher.input_size, optional=True)
        if teacher.norm_std and min(teacher.norm_std) <= 0:
            raise SpecError(f"{path}.norm_std={list(teacher.norm_std)} must be positive.")
        check_positive(f"{path}.temperature", teacher.temperature, optional=True)
        check_positive(f"{path}.loss_lambda", teacher.loss_lambda, allow_zero=True, optional=True)
        check_positive(f"{path}.summary_loss_weight", teacher.summary_loss_weight, allow_zero=True, optional=True)
        check_positive(f"{path}.fd_loss_weight", teacher.fd_loss_weight, allow_zero=True, optional=True)
        check_positive(f"{path}.summary_token_idx", teacher.summary_token_idx, allow_zero=True, optional=True)
        check_positive(f"{path}.patch_size", teacher.patch_size, optional=True)
        _resolution_map(f"{path}.stochastic_resolutions", teacher.stochastic_resolutions)
        check_choice(f"{path}.adaptor", teacher.adaptor, ADAPTORS, optional=True)
        check_positive(f"{path}.mosaic", teacher.mosaic)


def validate_train(train) -> None:
    """The ``train`` section (shared by every task): ranges of the loop, checkpoint and optimizer fields."""
    check_positive("train.num_gpus", train.num_gpus)
    check_positive("train.num_nodes", train.num_nodes)
    check_positive("train.num_epochs", train.num_epochs)
    check_positive("train.max_steps", train.max_steps, optional=True)
    check_positive("train.grad_accumulation_steps", train.grad_accumulation_steps)
    check_positive("train.clip_grad_norm", train.clip_grad_norm, allow_zero=True, optional=True)
    check_positive("train.checkpoint_interval", train.checkpoint_interval, allow_zero=True, optional=True)
    check_positive("train.checkpoint_interval_steps", train.checkpoint_interval_steps, optional=True)
    check_positive("train.torch_threads", train.torch_threads, allow_zero=True, optional=True)
    check_positive("train.keep_checkpoints", train.keep_checkpoints)
    check_positive("train.log_every_n_steps", train.log_every_n_steps)
    check_positive("train.max_consecutive_nonfinite", train.max_consecutive_nonfinite)

    check_positive("train.optim.lr", train.optim.lr)
    check_positive("train.optim.weight_decay", train.optim.weight_decay, allow_zero=True)
    check_positive("train.optim.min_lr", train.optim.min_lr, allow_zero=True)
    check_positive("train.optim.warmup_epochs", train.optim.warmup_epochs, allow_zero=True, optional=True)
    check_positive("train.optim.warmup_steps", train.optim.warmup_steps, allow_zero=True, optional=True)
    check_length("train.optim.betas", train.optim.betas, [2])
    if not all(0.0 <= b < 1.0 for b in train.optim.betas):
        raise SpecError(f"train.optim.betas={list(train.optim.betas)} is not valid; each must be in [0, 1).")
    check_positive("train.optim.momentum", train.optim.momentum, allow_zero=True)
    _validate_policy_params(train.optim.policy, train.optim.policy_params)


def _validate_policy_params(policy: str, params) -> None:
    where = "train.optim.policy_params"
    if policy == "step":
        size = params.get("step_size")
        if not isinstance(size, int) or size < 1:
            raise SpecError(
                f"train.optim.policy=step needs {where}.step_size, a whole number of steps >= 1 (got {size!r}), "
                "e.g. {step_size: 1000, gamma: 0.1}."
            )
    if policy == "multistep":
        milestones = params.get("milestones")
        if not milestones or not all(isinstance(m, int) and m >= 0 for m in milestones):
            raise SpecError(
                f"train.optim.policy=multistep needs {where}.milestones, a list of step numbers (got "
                f"{milestones!r}), e.g. {{milestones: [1000, 2000], gamma: 0.1}}."
            )
    if policy in ("step", "multistep"):
        check_positive(f"{where}.gamma", params.get("gamma", 0.1))


def _validate_sources(section, path: str, *, required: bool) -> None:
    sources = section.tar_data_sources
    if sources and section.images_dir:
        raise SpecError(f"{path} sets both tar_data_sources and images_dir; use one of them.")
    if required and not sources and not section.images_dir:
        raise SpecError(f"{path} has no data: set tar_data_sources (a list of root_dir entries) or images_dir.")
    for i, src in enumerate(sources):
        where = f"{path}.tar_data_sources[{i}]"
        if not str(src.root_dir).strip():
            raise SpecError(f"{where}.root_dir is empty; give a folder holding *.tar shards.")
        check_positive(f"{where}.scale_factor", src.scale_factor)
        check_positive(f"{where}.steps_per_epoch", src.steps_per_epoch, optional=True)
        check_positive(f"{where}.samples_per_file", src.samples_per_file, optional=True)
