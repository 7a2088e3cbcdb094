"""The training loader: mixture emitter + lane readers + crops, as a stream of per-step batches.

Global sample slot ``g`` belongs to step ``g // (B*W)`` and rank ``(g % (B*W)) // B`` (B: per-rank batch,
W: world size). The emitter decides each slot's source. The n-th slot a rank gives to a source is filled by
lane ``n % lanes`` of that source (``lanes.lanes_for_source``), which reads its own disjoint part of the
source (see ``sources.reader_units``). DataLoader workers host lanes (lane ``l`` on worker ``l % workers``); every
worker yields one *chunk* per step (the slots its lanes fill, possibly none), and the main process
assembles the chunks of a step into its ``Batch``. So each step's content is a pure function of (seed,
world size, rank, step), whatever the worker count, and every rank yields one batch per step.
"""

import atexit
import math
import multiprocessing
import os
import random
import signal
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from radio.config.schema import DatasetConfig, NativeResolutionFilter
from radio.config.validate import check_decode_on_device
from radio.data.crops import CropSettings, decode_crop, decode_crop_or_defer_jpeg
from radio.data.dedup import KeyCounts, WeightedAcceptance, counts_path
from radio.data.device_decode import DEVICE_DECODE_FAILED, ChunkJpegs, DecodeFailures, DeferredCrops, DeferredJpeg
from radio.data.lanes import MAX_LANES_PER_RANK, LanePosition, LaneReader, ReaderContext, lanes_for_source
from radio.data.mixture import MixtureEmitter
from radio.data.notices import NoticeBoard
from radio.data.sources import Source, build_sources, estimate_samples
from radio.data.views import ViewPlan
from radio.errors import DataError

STATE_VERSION = 1


@dataclass
class Batch:
    """One rank's batch of one global step.

    ``images``: uint8 [B,3,S,S], S = ``plan.max_size(step)`` (channels-last memory; one crop region per
    sample, views are made from it on the device by ``views.make_view``). ``keys``: "{shard}:{key}" per
    sample; ``sources``: int64 [B] index into ``TrainLoader.source_names``; ``labels``: int64 [B] (-1: none);
    ``sizes``: ``plan.sizes_for_step(step)``; ``counters``: cumulative counters of this rank's readers
    (``read/samples``, ``dropped/<reason>``, ``skipped/<reason>``, ``error/<reason>``, ``format/<warning>``);
    sum them over ranks for run totals. ``position``: the loader's state right after this batch, the one to
    checkpoint once it is trained on (a consumer may have read further ahead: ``data/prefetch.py``).
    ``deferred``: with ``dataset.decode_on_device``, the colour JPEGs whose rows of ``images`` are still to
    be decoded, on the training device (``device_decode.with_device_images``, where the batch reaches it).
    """

    images: torch.Tensor
    keys: List[str]
    sources: torch.Tensor
    labels: torch.Tensor
    step: int
    sizes: Dict[str, int]
    counters: Dict[str, int]
    position: Optional[dict] = None
    deferred: Optional[DeferredCrops] = None


@dataclass
class _Chunk:
    """What one worker produced for one step: the slots (batch positions) its lanes filled."""

    step: int
    worker: int
    positions: List[int] = field(default_factory=list)
    images: Optional[torch.Tensor] = None  # uint8 [n,S,S,3]
    keys: List[str] = field(default_factory=list)
    sources: List[int] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    lanes: Dict[str, List[int]] = field(default_factory=dict)  # "source/lane" -> LanePosition, after the step
    counters: Dict[str, int] = field(default_factory=dict)  # this worker's cumulative counters
    notices: Dict[tuple, object] = field(default_factory=dict)  # this worker's data notices (notices.py)
    emitter: Dict[str, object] = field(default_factory=dict)  # emitter state after the step
    rank_counts: List[int] = field(default_factory=list)  # per source: slots this rank gave it, after the step
    deferred: List[DeferredJpeg] = field(default_factory=list)  # decode_on_device: JPEG rows left undecoded
    jpeg_bytes: Optional[torch.Tensor] = None  # uint8: the deferred JPEGs' bytes, back to back
    error: Optional[str] = None


def crop_settings(dataset_cfg: DatasetConfig) -> CropSettings:
    augmentation, train = dataset_cfg.augmentation, dataset_cfg.train_dataset
    return CropSettings(
        scale=tuple(augmentation.crop_scale),
        ratio=tuple(augmentation.crop_ratio),
        hflip_probability=float(augmentation.hflip_probability),
        native_filter=NativeResolutionFilter(
            **{
                name: getattr(train.native_resolution_filter, name)
                for name in NativeResolutionFilter.__dataclass_fields__
            }
        ),
        near_constant_std=float(train.near_constant_std) if train.drop_near_constant else None,
    )


class _StepStream(IterableDataset):
    """Chunks for consecutive steps from a loader state; runs in each DataLoader worker (or inline)."""

    def __init__(
        self,
        sources: List[Source],
        plan: ViewPlan,
        settings: CropSettings,
        state: dict,
        *,
        seed: int,
        rank: int,
        world_size: int,
        batch_size: int,
        max_error_rate: float,
        acceptance: List[Optional[WeightedAcceptance]],
        decode_on_device: bool = False,
    ):
        super().__init__()
        self.sources, self.plan, self.settings, self.state = sources, plan, settings, state
        self.seed, self.rank, self.world_size, self.batch_size = seed, rank, world_size, batch_size
        self.max_error_rate, self.acceptance = max_error_rate, acceptance
        self.decode_on_device = decode_on_device

    def __iter__(self) -> Iterator[_Chunk]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.chunks(worker, num_workers)

    def chunks(self, worker: int, num_workers: int) -> Iterator[_Chunk]:
        """One chunk per step, forever, for the lanes hosted by ``worker`` of ``num_workers``."""
        emitter = MixtureEmitter([s.scale_factor for s in self.sources])
        emitter.load_state_dict(self.state["emitter"])
        rank_counts = list(self.state["rank_counts"])
        context = ReaderContext(max_error_rate=self.max_error_rate)
        lanes = self._open_lanes(worker, num_workers, context)
        step = int(self.state["step"])
        while True:
            chunk = _Chunk(step, worker)
            try:
                self._fill(chunk, emitter, rank_counts, lanes, num_workers)
            except DataError as error:  # re-raised by the main process, without a worker traceback
                chunk.error = str(error)
                yield chunk
                return
            chunk.lanes = {f"{s}/{l}": reader.position.to_list() for (s, l), reader in lanes.items()}
            chunk.counters = dict(context.counters)
            chunk.notices = context.notices.snapshot()
            chunk.emitter = emitter.state_dict()
            chunk.rank_counts = list(rank_counts)
            yield chunk
            step += 1

    def _open_lanes(self, worker: int, num_workers: int, context: ReaderContext) -> Dict[Tuple[int, int], LaneReader]:
        lanes = {}
        for source_index, (source, count) in enumerate(zip(self.sources, self.state["lanes_per_rank"])):
            for lane in range(worker, count, num_workers):
                saved = self.state["lanes"].get(f"{source_index}/{lane}")
                lanes[source_index, lane] = LaneReader(
                    source,
                    source_index,
                    self.rank * count + lane,
                    self.world_size * count,
                    self.seed,
                    context,
                    self.acceptance[source_index],
                    LanePosition.from_list(saved) if saved else None,
                )
        return lanes

    def _fill(
        self,
        chunk: _Chunk,
        emitter: MixtureEmitter,
        rank_counts: List[int],
        lanes: Dict[Tuple[int, int], LaneReader],
        num_workers: int,
    ) -> None:
        """Emit the step's global slots; fill this rank's slots whose lane this worker hosts.

        Crops are decoded straight into the chunk's uint8 [n,S,S,3] tensor (no per-sample arrays to stack);
        with ``decode_on_device`` colour JPEGs are only planned, and their bytes and plans join the chunk.
        """
        step, out_size = chunk.step, self.plan.max_size(chunk.step)
        slots_per_step = self.batch_size * self.world_size
        first_slot = step * slots_per_step + self.rank * self.batch_size
        step_sources = emitter.take(slots_per_step)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        lanes_per_rank = self.state["lanes_per_rank"]
        mine = []  # (position, source, lane) of the slots this worker fills
        for position, source_index in enumerate(step_sources):
            lane = rank_counts[source_index] % lanes_per_rank[source_index]
            rank_counts[source_index] += 1
            if lane % num_workers == chunk.worker:
                mine.append((position, source_index, lane))
        if not mine:
            return
        images = torch.empty((len(mine), out_size, out_size, 3), dtype=torch.uint8)
        crop = decode_crop_or_defer_jpeg if self.decode_on_device else decode_crop
        deferred = ChunkJpegs()
        for row, (position, source_index, lane) in enumerate(mine):
            # Crop randomness belongs to the slot, so it does not depend on which process fills it.
            slot_rng = random.Random(f"radio-crop/{self.seed}/{first_slot + position}")
            raw, result = lanes[source_index, lane].next_sample(
                lambda data: crop(data, random.Random(slot_rng.random()), out_size, self.settings, out=images[row])
            )
            if self.decode_on_device and result is not None:  # a CropPlan: the device decodes this row
                deferred.add(position, result, raw.image, self.sources[source_index].name, raw.key)
            chunk.positions.append(position)
            chunk.keys.append(raw.key)
            chunk.sources.append(source_index)
            chunk.labels.append(raw.label)
        chunk.images = images
        chunk.deferred, chunk.jpeg_bytes = deferred.jpegs, deferred.packed()


class TrainLoader:
    """Iterable of ``Batch`` for consecutive global steps from its current step (endless; the caller stops).

    ``dataset_cfg.batch_size`` samples per rank per step, ``dataset_cfg.workers`` DataLoader workers (0: in
    this process). ``state_dict()`` after consuming step k resumes at step k+1 with exactly the samples an
    uninterrupted run would use, seeking straight to each lane's position. The state is per rank (each rank
    reads its own part of the data): save every rank's and give each rank its own back.
    """

    def __init__(self, dataset_cfg: DatasetConfig, plan: ViewPlan, *, seed: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.sources = build_sources(dataset_cfg.train_dataset)
        self.source_names = [source.name for source in self.sources]
        self.plan = plan
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.batch_size = int(dataset_cfg.batch_size)
        self.workers = int(dataset_cfg.workers)
        self.max_error_rate = float(dataset_cfg.max_error_rate)
        self.num_classes = int(dataset_cfg.num_classes)
        self.settings = crop_settings(dataset_cfg)
        self.decode_on_device = bool(dataset_cfg.decode_on_device)
        check_decode_on_device(dataset_cfg)
        self.acceptance = self._weighting(dataset_cfg)
        self._sample_counts: Dict[int, int] = {}
        self.steps_per_epoch = self._steps_per_epoch()
        self.lanes_per_rank = [
            lanes_for_source(source, self.world_size, lambda i=index: self._count_samples(i))
            for index, source in enumerate(self.sources)
        ]
        self.weights = [source.scale_factor for source in self.sources]
        emitter = MixtureEmitter(self.weights)
        self._state = {
            "version": STATE_VERSION,
            "step": 0,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "lanes_per_rank": self.lanes_per_rank,
            "sources": list(self.source_names),
            "weights": list(self.weights),
            "emitter": emitter.state_dict(),
            "rank_counts": [0] * len(self.sources),
            "lanes": {},
            "counters": {},
        }

    def _weighting(self, dataset_cfg: DatasetConfig) -> List[Optional[WeightedAcceptance]]:
        mode = dataset_cfg.train_dataset.data_weight_mode
        if mode == "none":
            return [None] * len(self.sources)
        return [WeightedAcceptance(mode, KeyCounts(counts_path(source.root)), self.seed) for source in self.sources]

    def _count_samples(self, source_index: int) -> int:
        if source_index not in self._sample_counts:
            self._sample_counts[source_index] = estimate_samples(self.sources[source_index])
        return self._sample_counts[source_index]

    def _steps_per_epoch(self) -> int:
        """The largest ``steps_per_epoch``; a source without one counts one pass at the global batch size."""
        steps = []
        for index, source in enumerate(self.sources):
            if source.steps_per_epoch:
                steps.append(int(source.steps_per_epoch))
                continue
            steps.append(max(1, math.ceil(self._count_samples(index) / (self.batch_size * self.world_size))))
        return max(steps)

    def state_dict(self) -> dict:
        """Small JSON-serialisable state: next step, source weights, emitter, per-lane positions, cumulative
        counters."""
        return _copy_state(self._state)

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by the same rank of a run with the same sources, seed and batch layout.

        A state saved with other source weights (``scale_factor``) restarts the mixture from this run's
        weights; every source keeps its read position."""
        expected = {
            "version": STATE_VERSION,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "sources": list(self.source_names),
        }
        for name, value in expected.items():
            if state.get(name) != value:
                raise DataError(
                    f"data-loader state does not match this run: {name} is {state.get(name)!r} in the "
                    f"checkpoint and {value!r} now (resume with the same dataset sources, seed, batch size "
                    f"and world size, and give each rank its own saved state)"
                )
        # States saved before the weights were recorded are taken to hold this run's weights.
        self._state = _copy_state({"weights": self.weights, **state})
        self.lanes_per_rank = list(self._state["lanes_per_rank"])  # the run's split, even if the data grew
        if self._state["weights"] != self.weights:
            self._restart_mixture()

    def _restart_mixture(self) -> None:
        """Restart the emitter's credits so this run's weights are honoured exactly from the resume step; the
        per-source slot counts and lane positions are kept, so no source re-reads or skips a sample."""
        changes = [
            f"{name!r} {old} -> {new}"
            for name, old, new in zip(self.source_names, self._state["weights"], self.weights)
            if old != new
        ]
        emitter = MixtureEmitter(self.weights)
        emitter.load_state_dict(self._state["emitter"])
        emitter.restart()
        self._state["emitter"] = emitter.state_dict()
        self._state["weights"] = list(self.weights)
        if self.rank == 0:  # every rank restarts alike; one note is enough
            print(
                f"note: dataset mixture weights changed since the checkpoint (scale_factor of source "
                f"{', '.join(changes)}): the mixture restarts from the new weights at step {self._state['step']}; "
                "every source continues from its saved read position."
            )

    def __iter__(self) -> Iterator[Batch]:
        state = _copy_state(self._state)
        stream = _StepStream(
            self.sources,
            self.plan,
            self.settings,
            state,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            max_error_rate=self.max_error_rate,
            acceptance=self.acceptance,
            decode_on_device=self.decode_on_device,
        )
        release = None  # called once workers may be ended by a signal (the DataLoader ends them so)
        if self.workers == 0:
            chunks, num_workers = stream.chunks(0, 1), 1
        else:
            released = multiprocessing.RawValue("b", 0)
            release = partial(release_workers, released)
            atexit.register(release)  # also when the process exits without closing this iterator
            num_workers = min(self.workers, MAX_LANES_PER_RANK)
            # A private generator: without one the DataLoader draws its worker seed from the global RNG,
            # which the student's stochastic layers use too, so resume and worker count would change training.
            chunks = iter(
                DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=num_workers,
                    prefetch_factor=4,
                    persistent_workers=False,
                    generator=torch.Generator().manual_seed(self.seed),
                    worker_init_fn=partial(stop_signals_are_for_the_main_process, released),
                )
            )
        base_counters = dict(state["counters"])
        latest_counters: Dict[int, Dict[str, int]] = {}
        notices = NoticeBoard(self.rank, self.world_size)  # data problems: one line per source and kind
        device_failures = DecodeFailures(notices.prefix)  # decode_on_device: counted where the batch is decoded
        try:
            while True:
                step_chunks = [next(chunks) for _ in range(num_workers)]
                for chunk in step_chunks:
                    if chunk.error:
                        raise DataError(chunk.error)
                    latest_counters[chunk.worker] = chunk.counters
                    notices.update(chunk.worker, chunk.notices)
                batch = self._assemble(step_chunks, base_counters, latest_counters, device_failures)
                yield batch
        finally:
            notices.close()
            if release is not None:
                release()
                atexit.unregister(release)

    def _assemble(
        self,
        chunks: List[_Chunk],
        base_counters: Dict[str, int],
        latest_counters: Dict[int, Dict[str, int]],
        device_failures: DecodeFailures,
    ) -> Batch:
        step = chunks[0].step
        if any(chunk.step != step for chunk in chunks):
            raise RuntimeError(f"data workers out of step: {[chunk.step for chunk in chunks]}")
        size = self.plan.max_size(step)
        if len(chunks) == 1:  # one worker filled every slot in order: its tensor is the batch
            pixels = chunks[0].images
        else:
            pixels = torch.empty((self.batch_size, size, size, 3), dtype=torch.uint8)
        keys = [""] * self.batch_size
        sources = torch.empty(self.batch_size, dtype=torch.int64)
        labels = torch.empty(self.batch_size, dtype=torch.int64)
        for chunk in chunks:
            if not chunk.positions:
                continue
            index = torch.tensor(chunk.positions, dtype=torch.int64)
            if len(chunks) > 1:
                for row, position in enumerate(chunk.positions):  # row copies: far faster than index_copy_
                    pixels[position].copy_(chunk.images[row])
            sources[index] = torch.tensor(chunk.sources, dtype=torch.int64)
            labels[index] = torch.tensor(chunk.labels, dtype=torch.int64)
            for position, key in zip(chunk.positions, chunk.keys):
                keys[position] = key
        if self.num_classes > 0 and int(labels.max()) >= self.num_classes:
            # An out-of-range class would crash the loss (a device-side assert on GPU); say where it came from.
            bad = int(labels.argmax())
            raise DataError(
                f"sample {keys[bad]!r} has class label {int(labels[bad])}, but dataset.num_classes is "
                f"{self.num_classes} (labels must be in [0, {self.num_classes})); raise dataset.num_classes or "
                "fix the .cls files / class folders."
            )
        counters = dict(base_counters)
        for worker_counters in latest_counters.values():
            for name, value in worker_counters.items():
                counters[name] = counters.get(name, 0) + value
        if device_failures.count:  # those of earlier batches: a batch's own are added when it is decoded
            counters[DEVICE_DECODE_FAILED] = counters.get(DEVICE_DECODE_FAILED, 0) + device_failures.count
        state = self._state
        state["step"] = step + 1
        state["emitter"] = chunks[0].emitter
        state["rank_counts"] = chunks[0].rank_counts
        for chunk in chunks:
            state["lanes"].update(chunk.lanes)
        state["counters"] = counters
        return Batch(
            pixels.permute(0, 3, 1, 2),
            keys,
            sources,
            labels,
            step,
            self.plan.sizes_for_step(step),
            dict(counters),
            _copy_state(state),
            _deferred_crops(chunks, device_failures) if self.decode_on_device else None,
        )


def _deferred_crops(chunks: List[_Chunk], failures: DecodeFailures) -> Optional[DeferredCrops]:
    """The step's deferred JPEG crops from every chunk, each with a view of its bytes; None when there are none."""
    jpegs = [jpeg for chunk in chunks for jpeg in chunk.deferred]
    if not jpegs:
        return None
    data = [chunk.jpeg_bytes[jpeg.start : jpeg.stop] for chunk in chunks for jpeg in chunk.deferred]
    return DeferredCrops(jpegs, data, failures)


def _copy_state(state: dict) -> dict:
    copied = dict(state)
    copied["emitter"] = {k: (list(v) if isinstance(v, list) else v) for k, v in state["emitter"].items()}
    copied["rank_counts"] = list(state["rank_counts"])
    copied["lanes"] = {k: list(v) for k, v in state["lanes"].items()}
    copied["counters"] = dict(state["counters"])
    copied["sources"] = list(state["sources"])
    copied["weights"] = list(state["weights"])
    copied["lanes_per_rank"] = list(state["lanes_per_rank"])
    return copied


def release_workers(released) -> None:
    released.value = 1


def stop_signals_are_for_the_main_process(released, worker_id: int) -> None:
    """Workers ignore the stop signals (``engine/stop.py``) while the run uses them: when SLURM or torchrun
    signals the whole process group, the main process decides, finishes its step and checkpoints; a worker
    that died first would take the run down with it. Once the loader is done (``released``), a signal ends
    the worker: that is how the DataLoader shuts its workers down."""

    def on_signal(signum, frame):
        if released.value:
            os._exit(0)  # a clean exit: the DataLoader's SIGCHLD check reports workers killed by a signal

    for name in ("SIGTERM", "SIGINT", "SIGUSR1"):
        signal.signal(getattr(signal, name), on_signal)
