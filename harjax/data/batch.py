"""The batch contract: the one definition of what every data source yields.

An example (one row of a source) and a batch (stacked examples) carry:

    'sensor'       float32 [T, C]     (batch: [B, T, C]) wearable streams, padded to T
    'sensor_mask'  bool    [T]        (batch: [B, T])    True on recorded steps, False on padding
    'label'        int32   []         (batch: [B])       class index in [0, num_classes)
    'video'        float32 [d_v]      (batch: [B, d_v])  clip embedding, optional (video-free sources)
                   or      [F, d_v]   (batch: [B, F, d_v]) per-frame embeddings

Optional:
    'trial'        int32   []         (batch: [B])       examples with the same value are views (cameras) of
                                                         one trial; evaluation also scores their mean logits
    'video_present' bool   []         (batch: [B])       False: the video is removed (the model sees the
                                                         standardised embedding as zeros); absent = all present
Distillation (harjax/serving/teacher.py) adds 'teacher_logits' float32 [classes] (batch: [B, classes]) to training
examples: the teacher's logits on that example, computed once.
The input pipeline adds 'valid' bool [B] (False on rows that only pad the last evaluation batch) and, to
evaluation batches, 'index' int32 [B] (the example's position in its split, -1 on padding).

"Removed" means the same for both modalities: the value the model sees is the training data's mean. A removed
sensor stream is zeros after standardisation (as MMAct's missing streams are stored); a removed video embedding is
zeros after the model's per-dimension standardisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from harjax import errors

SENSOR = "sensor"
SENSOR_MASK = "sensor_mask"
LABEL = "label"
VIDEO = "video"
VALID = "valid"
TRIAL = "trial"
VIDEO_PRESENT = "video_present"
INDEX = "index"
TEACHER_LOGITS = "teacher_logits"

Batch = dict[str, np.ndarray]


class DataError(errors.UserError):
    """Data that breaks the batch contract; the message names the file, array and expectation."""


Columns = Mapping[str, Any]  # a split's stored arrays, numpy (host) or jax (device)
Selection = dict[str, np.ndarray]  # int arrays [B]: which stored rows make a batch and how each is viewed


class Split(Protocol):
    """A split as its data path runs: select -> (read or columns) -> gather.

    `select(indices, draws)` turns example positions into a Selection: small int arrays that say which stored rows
    make the batch and how each is viewed (MMAct: which camera, where the crop starts). Training passes `draws`
    [B, 2], uniform numbers from harjax.data.sampling (camera, crop); evaluation passes None and gets the fixed view
    (each listed camera, the centred crop). `gather(columns, selection, xp)` builds the contract batch with array
    namespace xp (numpy, or jax.numpy inside the jitted step), the same code for every data cache: from `columns()`
    (the whole split in memory) or from `read(selection)` (just the rows it needs, the streaming path).
    """

    num_classes: int
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]  # one per sensor channel C; sensor_streams() groups them
    origin: str
    fingerprint: str
    report: Mapping[str, int]  # what loading skipped or changed, by reason (saved in config.json)
    # What a model trained on this split needs to be used on new data (saved in config.json, then in bundles):
    normalization: Mapping[str, Any]  # 'mode', and the per-channel training 'mean' and 'std' where it uses them
    sampling_rate_hz: float  # of the sensor steps
    video_source: Mapping[str, Any]  # what produced the video embeddings (model, prompts, kind), {} if none
    preparation: Mapping[str, Any]  # how a raw recording became an example (alignment, crop), {} if not known

    def __len__(self) -> int: ...

    @property
    def labels(self) -> np.ndarray:
        """[N] the label of every example, known without reading any embedding."""

    @property
    def example_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of each contract array of one example."""

    @property
    def has_video(self) -> bool: ...

    @property
    def recording_lengths(self) -> np.ndarray:
        """[recordings] the recorded sensor steps of each (as the model sees it, after any crop), 0 for none."""

    @property
    def column_bytes(self) -> int:
        """What columns() takes in memory, known before reading it."""

    def select(self, indices: np.ndarray, draws: np.ndarray | None) -> Selection: ...

    def hold_out(self, fraction: float, seed: int) -> tuple[Split, Split]:
        """(the rest, a validation split of about `fraction` of the examples).

        By whole subjects where the split knows them, else stratified by class; the validation split is viewed as
        evaluation views it.
        """

    def columns(self) -> Columns: ...

    def read(self, selection: Selection) -> tuple[Columns, Selection]: ...

    def gather(self, columns: Columns, selection: Selection, xp: Any) -> Batch: ...


def examples(split: Split, indices: Sequence[int] | np.ndarray) -> Batch:
    """Contract examples at split positions `indices` (evaluation's view), stacked; reads only those rows."""
    return split.gather(*split.read(split.select(np.asarray(indices), None)), np)


def default_channel_names(num_channels: int) -> tuple[str, ...]:
    """'imu<k>_x/y/z' when channels come in threes (one stream per 3-axis sensor), else 'ch<i>'."""
    if num_channels % 3 == 0:
        return tuple(f"imu{k}_{axis}" for k in range(num_channels // 3) for axis in "xyz")
    return tuple(f"ch{i}" for i in range(num_channels))


def sensor_streams(channel_names: tuple[str, ...]) -> dict[str, list[int]]:
    """Channels grouped into streams by the name before the last '_' (acc_phone_x -> 'acc_phone').

    A name without '_' is a stream of its own.
    """
    streams: dict[str, list[int]] = {}
    for index, name in enumerate(channel_names):
        streams.setdefault(name.rsplit("_", 1)[0], []).append(index)
    return streams


def dims(split: Split) -> dict[str, tuple[int, ...]]:
    """Per-example shapes that fix the model's parameter shapes.

    Not the recording length T, since the model is length-agnostic (splits of different lengths, e.g. npz files each
    padded to its own longest recording, pair without padding or cropping).
    """
    return {
        name: shape[-1:] if name == SENSOR else shape
        for name, (shape, _) in split.example_spec.items()
        if name not in (SENSOR_MASK, TRIAL)
    }


@dataclasses.dataclass(frozen=True)
class ArrayData:
    """A whole split held in memory as arrays that satisfy the contract, plus what the model needs to know."""

    arrays: Mapping[str, np.ndarray]
    num_classes: int
    class_names: tuple[str, ...]
    origin: str  # a file path or a generator description, used in error messages and config.json
    fingerprint: str  # changes whenever the data changes: the data version saved with each run
    channel_names: tuple[str, ...] = ()  # () = default_channel_names of the sensor's width
    report: Mapping[str, int] = dataclasses.field(default_factory=dict)
    normalization: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # set when standardised
    sampling_rate_hz: float = 0.0  # 0: not known (set by the pipeline from config.data.sampling_rate_hz)
    video_source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preparation: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    subjects: np.ndarray | None = None  # [N] who was recorded (npz 'subject'); validation holds out whole subjects

    def __post_init__(self):
        if not self.channel_names:
            object.__setattr__(self, "channel_names", default_channel_names(self.arrays[SENSOR].shape[-1]))

    def __len__(self) -> int:
        return len(self.arrays[LABEL])

    @property
    def labels(self) -> np.ndarray:
        return self.arrays[LABEL]

    @property
    def has_video(self) -> bool:
        return VIDEO in self.arrays

    @property
    def recording_lengths(self) -> np.ndarray:
        return self.arrays[SENSOR_MASK].sum(axis=1)

    @property
    def example_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {name: (tuple(array.shape[1:]), array.dtype) for name, array in self.arrays.items()}

    @property
    def column_bytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())

    def select(self, indices: np.ndarray, draws: np.ndarray | None) -> Selection:
        return {"rows": np.asarray(indices, np.int32)}  # nothing random in how a stored row is viewed

    def hold_out(self, fraction: float, seed: int) -> tuple[ArrayData, ArrayData]:
        held = hold_out_positions(self.labels, self.subjects, fraction, seed)

        def part(keep: np.ndarray, name: str) -> ArrayData:
            return dataclasses.replace(
                self,
                arrays={key: array[keep] for key, array in self.arrays.items()},
                origin=f"{self.origin} [{name}]",
                subjects=None if self.subjects is None else self.subjects[keep],
                report={**self.report, "examples": int(keep.sum())},
            )

        return part(~held, "training part"), part(held, "validation part")

    def columns(self) -> Columns:
        return self.arrays  # already in memory

    def read(self, selection: Selection) -> tuple[Columns, Selection]:
        return self.arrays, selection

    def gather(self, columns: Columns, selection: Selection, xp: Any) -> Batch:
        return {name: array[selection["rows"]] for name, array in columns.items()}


def hold_out_positions(labels: np.ndarray, subjects: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """[N] bool, True for the validation examples.

    Whole subjects (at least one, never all) when `subjects` is given, so no one is on both sides; else
    round(fraction * n) examples of each class with at least two.
    """
    if not 0 < fraction < 1:
        raise errors.ConfigError(f"config.data.validation_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    if subjects is not None:
        people = np.unique(subjects)
        if len(people) < 2:
            raise DataError(f"a validation split of whole subjects needs two or more; the training split has {people}")
        count = min(max(1, round(fraction * len(people))), len(people) - 1)
        return np.isin(subjects, rng.choice(people, count, replace=False))
    held = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            held[rng.choice(members, min(max(1, round(fraction * len(members))), len(members) - 1), replace=False)] = (
                True
            )
    return held


def validate_arrays(arrays: Mapping[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Checks raw arrays against the contract and returns them in the contract's dtypes.

    A missing 'sensor_mask' means every step is recorded.
    """

    def fail(name: str, expected: str, got: str) -> DataError:
        return DataError(f"{origin}: array '{name}' must be {expected}, got {got}")

    for name in (SENSOR, LABEL):
        if name not in arrays:
            raise DataError(f"{origin}: missing required array '{name}' (found: {sorted(arrays)})")
    sensor = np.asarray(arrays[SENSOR])
    if sensor.ndim != 3 or not np.issubdtype(sensor.dtype, np.floating):
        raise fail(SENSOR, "float [N, T, C]", f"{sensor.dtype} {list(sensor.shape)}")
    n, t = sensor.shape[:2]
    label = np.asarray(arrays[LABEL])
    if label.shape != (n,) or not np.issubdtype(label.dtype, np.integer):
        raise fail(LABEL, f"int [N] with N={n} (the number of 'sensor' rows)", f"{label.dtype} {list(label.shape)}")
    if n and label.min() < 0:
        raise fail(LABEL, "non-negative class indices", f"minimum {label.min()}")
    out = {SENSOR: sensor.astype(np.float32), LABEL: label.astype(np.int32)}

    if SENSOR_MASK in arrays:
        mask = np.asarray(arrays[SENSOR_MASK])
        if mask.shape != (n, t) or not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
            raise fail(SENSOR_MASK, f"bool [N, T] = [{n}, {t}]", f"{mask.dtype} {list(mask.shape)}")
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise fail(SENSOR_MASK, "0/1 or bool values", "other integers")
        mask = mask.astype(bool)
        # Recorded steps first, then padding: crops and time warps (harjax.augment) read a recording as a prefix.
        gapped = np.flatnonzero((mask[:, 1:] & ~mask[:, :-1]).any(axis=1))
        if len(gapped):
            raise fail(
                SENSOR_MASK,
                "recorded steps first and padding after in every row (fill or interpolate gaps inside a recording)",
                f"gaps inside rows {gapped[:10].tolist()}",
            )
        out[SENSOR_MASK] = mask
    else:
        out[SENSOR_MASK] = np.ones((n, t), bool)
    if n and not out[SENSOR_MASK].any(axis=1).all():
        empty = int((~out[SENSOR_MASK].any(axis=1)).sum())
        raise DataError(
            f"{origin}: array '{SENSOR_MASK}' marks no recorded step in {empty} rows; every example needs at least one"
        )

    if VIDEO in arrays:
        video = np.asarray(arrays[VIDEO])
        if video.ndim not in (2, 3) or len(video) != n or not np.issubdtype(video.dtype, np.floating):
            raise fail(VIDEO, f"float [N, d_v] or [N, F, d_v] with N={n}", f"{video.dtype} {list(video.shape)}")
        out[VIDEO] = video.astype(np.float32)

    for name in (SENSOR, VIDEO):
        if name in out and not np.isfinite(out[name]).all():
            raise fail(name, "finite", "NaN or Inf values")
    return out


def check_compatible_splits(train: Split, evaluation: Split) -> None:
    """Train and eval must agree on everything that shapes the model."""
    if dims(train) != dims(evaluation):
        raise DataError(
            f"per-example shapes differ between {train.origin} {dims(train)} and {evaluation.origin} {dims(evaluation)}"
        )
    if tuple(train.channel_names) != tuple(evaluation.channel_names):
        raise DataError(
            f"sensor channels differ between {train.origin} {list(train.channel_names)} and "
            f"{evaluation.origin} {list(evaluation.channel_names)}"
        )
    if evaluation.num_classes > train.num_classes:
        raise DataError(
            f"{evaluation.origin} has labels up to {evaluation.num_classes - 1} but "
            f"{train.origin} declares only {train.num_classes} classes"
        )


def empty_batch(split: Split) -> Batch:
    """A batch of zero rows with the split's arrays (what a process without eval data left pads)."""
    return {name: np.zeros((0, *shape), dtype) for name, (shape, dtype) in split.example_spec.items()}


def pad_batch(batch: Batch, size: int) -> Batch:
    """Pads a short batch to `size` rows and marks real rows in 'valid'; nothing is dropped."""
    rows = len(batch[LABEL])
    if rows > size:
        raise ValueError(f"batch of {rows} rows does not fit in {size}")
    padded = {
        name: np.concatenate([array, np.zeros((size - rows, *array.shape[1:]), array.dtype)])
        for name, array in batch.items()
    }
    padded[VALID] = np.arange(size) < rows
    return padded


_TARGET_ROWS = "target_rows"  # a Selection's example positions, where the targets are read


@dataclasses.dataclass(frozen=True)
class WithTargets:
    """A training split whose batches also carry one array per example computed elsewhere (a teacher's logits).

    The wrapped split's selection, reading and views are unchanged; the targets ride along by example position, so
    every data cache (none, host, device) and every process count serves them with the same batches. Their
    `identity` (what computed them) is part of the fingerprint: a resume with other targets is refused like a
    resume on other data.
    """

    split: Split
    name: str
    values: np.ndarray  # [N, ...] one row per example position
    identity: str

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.split, attribute)  # everything else is the wrapped split's

    def __len__(self) -> int:
        return len(self.split)

    @property
    def origin(self) -> str:
        return f"{self.split.origin} with {self.name} of {self.identity}"

    @property
    def fingerprint(self) -> str:
        return f"{self.split.fingerprint}+{self.name}:{self.identity[:16]}"

    @property
    def column_bytes(self) -> int:
        return self.split.column_bytes + self.values.nbytes

    def select(self, indices: np.ndarray, draws: np.ndarray | None) -> Selection:
        return self.split.select(indices, draws) | {_TARGET_ROWS: np.asarray(indices, np.int32)}

    def columns(self) -> Columns:
        return {**self.split.columns(), self.name: self.values}

    def read(self, selection: Selection) -> tuple[Columns, Selection]:
        inner = {key: value for key, value in selection.items() if key != _TARGET_ROWS}
        columns, inner = self.split.read(inner)
        return {**columns, self.name: self.values}, inner | {_TARGET_ROWS: selection[_TARGET_ROWS]}

    def gather(self, columns: Columns, selection: Selection, xp: Any) -> Batch:
        batch = self.split.gather(
            {key: value for key, value in columns.items() if key != self.name},
            {key: value for key, value in selection.items() if key != _TARGET_ROWS},
            xp,
        )
        return batch | {self.name: columns[self.name][selection[_TARGET_ROWS]]}
