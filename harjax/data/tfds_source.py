"""Datasets in harjax's TFDS format (MMAct's, and every recordings manifest's): protocol splits, views, normalisation.

The format (records, splits, metadata, config names) is harjax/data/tfds_format.py's. Reads with
tfds.builder_from_directory, so training needs neither the builders' code nor their dependencies.
A split is its stored trials and a list of views of them. Training views are trials: each epoch draws one of the
trial's cameras and, for a trial longer than config.data.max_length, where its crop starts. Evaluation views are
(trial, camera) pairs with the centred crop; views of a trial share a 'trial' id, so the evaluation also reports
the per-trial average. Both are the same transform of the stored trials (TFDSSplit.gather), from columns read
once into memory or from the few records a batch needs. Sensors are standardised with the protocol's training
statistics stored in the dataset (a stream a trial lacks stays zero), then padded to max_length steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

import ml_collections
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib, normalization, tfds_format

MMACT = "mmact"
PROTOCOLS = ("cross_subject", "cross_view", "cross_scene", "cross_session")  # MMAct's (its datasets predate the list)


def dataset_directory(data_dir: str, tfds_config: str, dataset: str = MMACT) -> str:
    """<data_dir>/<dataset>/<config>/<latest version>."""
    root = os.path.join(data_dir, dataset, tfds_config)
    versions = (
        sorted(
            (entry for entry in os.listdir(root) if entry[:1].isdigit()),
            key=lambda v: tuple(int(part) for part in v.split(".")),
        )
        if os.path.isdir(root)
        else []
    )
    if not versions:
        mmact = dataset == MMACT
        builder = "mmact.build --config=" + tfds_config if mmact else f"recordings.build --name={dataset}"
        raise batch_lib.DataError(
            f"{root}: no built {'MMAct' if mmact else dataset} dataset (config.data.data_dir={data_dir!r}, TFDS "
            f"config {tfds_config!r}); build it with python -m data_builders.{builder}"
        )
    return os.path.join(root, versions[-1])


@dataclasses.dataclass(frozen=True)
class Listing:
    """What selecting views needs of every stored trial of a split, without reading any embedding."""

    camera_mask: np.ndarray  # [N, cameras] bool: cameras with an embedding in this split
    sensor_length: np.ndarray  # [N] int: aligned sensor steps (0: no stream usable)
    label: np.ndarray  # [N] int
    subject: np.ndarray  # [N] int


@dataclasses.dataclass(frozen=True)
class TFDSSplit:
    """One protocol split: stored trials, the views to serve, and how to make them contract examples.

    The stored trials are the TFDS source's.
    """

    source: Any  # tfds random-access data source of stored trials
    listing: Listing
    views: np.ndarray  # [N_views, 2] (trial, camera); camera -1: drawn per epoch (training) or none (no video)
    training: bool
    mean: np.ndarray  # [C] the protocol's training statistics of recorded streams (normalization.py)
    std: np.ndarray
    normalization_mode: str  # config.data.sensor_normalization
    stream_channels: tuple[int, ...]  # channels of each stream, in order
    max_length: int
    uses_video: bool
    video_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    origin: str
    fingerprint: str
    report: dict[str, int]
    sampling_rate_hz: float
    video_source: dict[str, Any]
    preparation: dict[str, Any]
    # The stored trials this split's views use, in order: row r of columns() is stored trial stored_trials[r]. A
    # held-out validation split and what remains for training each hold only their own trials in memory.
    stored_trials: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stored_trials", np.unique(self.views[:, 0]))

    def __len__(self) -> int:
        return len(self.views)

    @property
    def normalization(self) -> dict[str, Any]:
        return normalization.applied(self.normalization_mode, self.mean, self.std)

    @property
    def labels(self) -> np.ndarray:
        return self.listing.label[self.views[:, 0]].astype(np.int32)

    @property
    def has_video(self) -> bool:
        return self.uses_video

    @property
    def recording_lengths(self) -> np.ndarray:
        lengths = self.listing.sensor_length[self.stored_trials]
        return np.minimum(lengths[lengths > 0], self.max_length)  # trials without a usable stream: the loader counts

    @property
    def example_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        spec = {
            batch_lib.SENSOR: ((self.max_length, len(self.mean)), np.dtype(np.float32)),
            batch_lib.SENSOR_MASK: ((self.max_length,), np.dtype(bool)),
            batch_lib.LABEL: ((), np.dtype(np.int32)),
        }
        if self.uses_video:
            spec[batch_lib.VIDEO] = (self.video_shape, np.dtype(np.float32))
        if not self.training:
            spec[batch_lib.TRIAL] = ((), np.dtype(np.int32))
        return spec

    @property
    def column_bytes(self) -> int:
        steps = int(self.listing.sensor_length[self.stored_trials].sum()) + 1
        trials = len(self.stored_trials)
        video = (
            trials * self.listing.camera_mask.shape[1] * int(np.prod(self.video_shape)) * 4 if self.uses_video else 0
        )
        return steps * len(self.mean) * 4 + video + trials * 3 * 8

    def select(self, indices: np.ndarray, draws: np.ndarray | None) -> batch_lib.Selection:
        """The views of `indices` as a Selection: their trial, camera and crop start.

        Training (draws [B, 2]: camera, crop) picks one of each trial's cameras and a crop start; evaluation keeps the
        listed camera (a training view read without draws: its first available one) and centres the crop.
        """
        trials, cameras = self.views[indices, 0], self.views[indices, 1]
        excess = np.maximum(self.listing.sensor_length[trials] - self.max_length, 0)
        if draws is None:
            start = excess // 2
            if self.uses_video:  # a training view read as evaluation reads it: its first available camera
                cameras = np.where(cameras < 0, np.argmax(self.listing.camera_mask[trials], axis=1), cameras)
        else:
            start = np.floor(draws[:, 1] * (excess + 1)).astype(np.int64)
            if self.uses_video:  # the k-th available camera, k uniform over the trial's count
                available = self.listing.camera_mask[trials]  # [B, cameras]
                pick = np.floor(draws[:, 0] * available.sum(axis=1)).astype(np.int64)
                cameras = np.argmax(np.cumsum(available, axis=1) > pick[:, None], axis=1)
        rows = np.searchsorted(self.stored_trials, trials)
        selection = {
            "rows": rows.astype(np.int32),
            "camera": np.maximum(cameras, 0).astype(np.int32),
            "start": start.astype(np.int32),
        }
        if not self.training:
            selection["trial"] = trials.astype(np.int32)
        return selection

    def hold_out(self, fraction: float, seed: int) -> tuple[TFDSSplit, TFDSSplit]:
        """Whole training subjects held out; their trials are scored view by view, as the test split is."""
        trials = self.views[:, 0]
        held = batch_lib.hold_out_positions(self.listing.label[trials], self.listing.subject[trials], fraction, seed)
        subjects = sorted(set(self.listing.subject[trials[held]].tolist()))
        if self.uses_video:
            trial_index, camera = np.nonzero(self.listing.camera_mask[trials[held]])
            validation_views = np.stack([trials[held][trial_index], camera], axis=1)
        else:
            validation_views = self.views[held]
        rest = dataclasses.replace(
            self,
            views=self.views[~held],
            origin=f"{self.origin} without subjects {subjects}",
            report={**self.report, "examples": int((~held).sum())},
        )
        validation = dataclasses.replace(
            self,
            views=validation_views,
            training=False,
            origin=f"{self.origin} subjects {subjects} (validation)",
            report={"examples": len(validation_views), "subjects": len(subjects)},
        )
        return rest, validation

    def _columns(self, trials: np.ndarray) -> batch_lib.Columns:
        """The given stored trials as columns.

        Sensors standardised, one after another in one [S + 1, C] array whose last row is zero (what padding steps
        read); embeddings [N, cameras, (F,) d] float32.
        """
        records = [self.source[int(trial)] for trial in trials]
        sensors, recorded_steps = [], []
        for record in records:
            recorded = np.repeat(record["sensor_present"], self.stream_channels)  # [C]
            steps = np.asarray(record.get("sensor_mask", np.ones(len(record["sensor"]), bool)), bool)  # [T]
            standardised = normalization.standardise(
                record["sensor"][None], steps[None], self.normalization_mode, self.mean, self.std
            )[0]
            sensors.append(np.where(recorded, standardised, 0.0).astype(np.float32))  # a missing stream stays 0
            recorded_steps.append(steps)
        sensors.append(np.zeros((1, len(self.mean)), np.float32))
        recorded_steps.append(np.zeros(1, bool))
        lengths = np.asarray([len(sensor) for sensor in sensors[:-1]], np.int32)
        columns = {
            "sensor": np.concatenate(sensors),
            "recorded": np.concatenate(recorded_steps),  # [S + 1]: False inside a recording's gaps
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32),
            "length": lengths,
            "label": np.asarray([record["label"] for record in records], np.int32),
        }
        if self.uses_video:  # float32 once here, not per batch (numpy's float16 conversion is slow)
            columns["embedding"] = np.stack([record["embedding"] for record in records]).astype(np.float32)
        return columns

    def columns(self) -> batch_lib.Columns:
        return self._columns(self.stored_trials)

    def read(self, selection: batch_lib.Selection) -> tuple[batch_lib.Columns, batch_lib.Selection]:
        trials, rows = np.unique(self.stored_trials[selection["rows"]], return_inverse=True)
        return self._columns(trials), selection | {"rows": rows.astype(np.int32)}

    def gather(self, columns: batch_lib.Columns, selection: batch_lib.Selection, xp: Any) -> batch_lib.Batch:
        rows, start = selection["rows"], selection["start"]
        steps = xp.arange(self.max_length)
        kept = xp.clip(columns["length"][rows] - start, 0, self.max_length)  # [B] recorded steps after the crop
        within = steps[None, :] < kept[:, None]  # [B, T]
        zero_row = columns["sensor"].shape[0] - 1  # padding reads the zero row: no masking pass over the batch
        index = xp.where(within, columns["offset"][rows][:, None] + start[:, None] + steps[None, :], zero_row)
        batch = {
            batch_lib.SENSOR: xp.take(columns["sensor"], index, axis=0),  # [B, T, C]
            batch_lib.SENSOR_MASK: xp.take(columns["recorded"], index, axis=0),  # [B, T]; padding reads False
            batch_lib.LABEL: columns["label"][rows],
        }
        if self.uses_video:
            cameras = columns["embedding"].shape[1]
            views = columns["embedding"].reshape(-1, *self.video_shape)  # [N * cameras, (F,) d]
            batch[batch_lib.VIDEO] = xp.take(views, rows * cameras + selection["camera"], axis=0)
        if "trial" in selection:
            batch[batch_lib.TRIAL] = selection["trial"]
        return batch


def _open(directory: str) -> Any:
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(directory)


def _listing(builder: Any, source: Any, name: str, directory: str) -> Listing:
    """From the dataset's metadata; a dataset built before the builder stored it is read record by record."""
    stored = builder.info.metadata.get(tfds_format.INDEX, {}).get(name)
    if stored is not None:
        return Listing(
            np.asarray(stored["camera_mask"], bool).reshape(len(source), -1),
            np.asarray(stored["sensor_length"], np.int64),
            np.asarray(stored["label"], np.int64),
            np.asarray(stored["subject"], np.int64),
        )
    logging.warning(
        "%s [%s] has no stored listing (built by an older builder): reading every record to list the "
        "views; rebuild the dataset to start faster",
        directory,
        name,
    )
    records = [source[index] for index in range(len(source))]
    return Listing(
        np.asarray([record["camera_mask"] for record in records], bool).reshape(len(source), -1),
        np.asarray([len(record["sensor"]) for record in records], np.int64),
        np.asarray([record["label"] for record in records], np.int64),
        np.asarray([record["subject"] for record in records], np.int64),
    )


def load_splits(config: ml_collections.ConfigDict, keep_video: bool = False) -> tuple[TFDSSplit, TFDSSplit]:
    """(train, eval) of config.data.protocol from the TFDS dataset under config.data.data_dir.

    config.data.source 'mmact' reads MMAct; 'recordings' reads the dataset config.data.dataset (built from a
    recordings manifest). A video-free model reads the video embeddings too when `keep_video` (for a teacher).
    """
    data = config.data
    dataset = MMACT if data.source == MMACT else data.dataset
    if dataset == MMACT and data.protocol not in PROTOCOLS:  # known before any dataset is opened
        raise errors.ConfigError(f"config.data.protocol must be one of {PROTOCOLS}, got {data.protocol!r}")
    if not data.data_dir:
        raise batch_lib.DataError(f"config.data.source={data.source!r} needs config.data.data_dir (the TFDS data_dir)")
    uses_video = config.model.modalities in ("both", "video")
    train_video = uses_video or keep_video  # the training split's examples: those with a camera
    prompt_set = tfds_format.stored_prompt_set(data.prompt_set, data.protocol)
    with_video = tfds_format.config_name(prompt_set, data.embedding)
    # A video-free model reads a recordings build without video, else one with (it ignores the embeddings).
    candidates = [data.tfds_config or with_video]
    if not (data.tfds_config or train_video or dataset == MMACT):
        candidates = [tfds_format.SENSORS_ONLY, with_video]
    for tfds_config in candidates:
        try:
            directory = dataset_directory(data.data_dir, tfds_config, dataset)
            break
        except batch_lib.DataError:
            if tfds_config == candidates[-1]:
                raise
    builder = _open(directory)
    protocols = tuple(builder.info.metadata.get("protocols", PROTOCOLS))
    if data.protocol not in protocols:
        raise errors.ConfigError(
            f"config.data.protocol must be one of {directory}'s protocols {protocols}, got {data.protocol!r}"
        )
    with open(os.path.join(directory, "dataset_info.json"), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()[:16]
    stats = builder.info.metadata["normalization"][data.protocol]
    names = tuple(builder.info.features["label"].names)
    if train_video and "embedding" not in builder.info.features:
        raise batch_lib.DataError(
            f"{directory} was built without video, but config.model.modalities={config.model.modalities!r}; "
            "train a video-free config such as configs/sensor_only.py, or build with --embeddings_dir"
        )
    embedding_shape = (
        tuple(builder.info.features["embedding"].shape) if train_video else ()
    )  # [cameras, d] or [cameras, 8, d]
    streams = builder.info.features["sensor_present"].shape[0]
    alignment = builder.info.metadata.get("alignment")  # a recordings build's settings, for raw-clip prediction
    if alignment:
        alignment = {**alignment, "rate_hz": builder.info.metadata["sensor_rate_hz"]}
    uses_sensor = config.model.modalities in ("both", "sensor")
    if data.protocol == "cross_view":  # its train and test splits hold the same trials, cameras aside
        if not uses_video:
            logging.warning(
                "config.data.protocol='cross_view' tests unseen cameras of the training trials: this "
                "video-free model is tested on the recordings it trained on, so its scores measure "
                "memorisation, not generalisation (experiment suites leave such runs out)"
            )
        elif uses_sensor:
            logging.warning(
                "cross_view: the test trials' sensor data is in the training split; only the camera view is new"
            )
    learned_on = builder.info.metadata.get("embeddings", {}).get("learned_prompt", {}).get("protocol")
    if uses_video and learned_on not in (None, data.protocol):
        raise errors.ConfigError(
            f"{directory} holds embeddings read with a prompt learned on {learned_on}'s training split; a run of "
            f"config.data.protocol={data.protocol!r} would test on clips it may have trained on: learn one for "
            f"{data.protocol} (python -m data_builders.prompt_tuning --protocol={data.protocol})"
        )
    extracted_with = builder.info.metadata.get("embeddings", {}).get("prompt_set")
    if uses_video and extracted_with != prompt_set:
        raise batch_lib.DataError(
            f"{directory} holds embeddings of prompt set {extracted_with!r}, but config.data.prompt_set="
            f"{data.prompt_set!r} reads {prompt_set!r}"
        )

    def split(part: str) -> TFDSSplit:
        name = f"{data.protocol}_{part}"
        source = builder.as_data_source(name)
        listing = _listing(builder, source, name, directory)
        reads_video = train_video if part == "train" else uses_video
        no_camera = reads_video & ~listing.camera_mask.any(axis=1)  # [N]: trials this model cannot use, by reason
        no_sensor = uses_sensor & (listing.sensor_length == 0) & ~no_camera
        usable = ~no_camera & ~no_sensor
        report = {
            "trials": len(source),
            "skipped_no_camera": int(no_camera.sum()),
            "skipped_no_sensor": int(no_sensor.sum()),
            "longer_than_max_length": int((usable & (listing.sensor_length > data.max_length)).sum()),
        }
        trials = np.flatnonzero(usable)
        if part == "train" or not reads_video:  # one view per trial (a video-free model scores each trial once)
            views = np.stack([trials, np.full(len(trials), -1)], axis=1)
        else:  # one view per camera
            trial_index, camera = np.nonzero(listing.camera_mask[trials])
            views = np.stack([trials[trial_index], camera], axis=1)
        report["examples"] = len(views)
        skipped = {reason: count for reason, count in report.items() if reason.startswith("skipped") and count}
        if skipped:
            logging.warning("%s/%s: %s", directory, name, skipped)
        return TFDSSplit(
            source=source,
            listing=listing,
            views=views.astype(np.int64),
            training=part == "train",
            mean=np.asarray(stats["mean"], np.float32),
            std=np.asarray(stats["std"], np.float32),
            normalization_mode=normalization.check_mode(data.sensor_normalization),
            stream_channels=tuple(
                builder.info.metadata.get("stream_channels", [len(stats["mean"]) // streams] * streams)
            ),
            max_length=data.max_length,
            uses_video=reads_video,
            video_shape=embedding_shape[1:],
            num_classes=len(names),
            class_names=names,
            channel_names=tuple(builder.info.metadata["sensor_channels"]),
            origin=f"{directory} [{name}]",
            fingerprint=fingerprint,
            report=report,
            sampling_rate_hz=float(builder.info.metadata.get("sensor_rate_hz", tfds_format.DEFAULT_RATE_HZ)),
            video_source={
                "extraction": builder.info.metadata.get("embeddings", {}),
                # what the build stored, also under an explicit tfds_config
                "embedding": tfds_format.embedding_kind(tfds_config),
                "tfds_config": tfds_config,
            }
            if reads_video
            else {},
            preparation={"alignment": alignment, "max_length": data.max_length, "crop": "centred"} if alignment else {},
        )

    return split("train"), split("test")
