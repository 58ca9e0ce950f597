"""Predictions on raw recordings: a manifest's clips and sensor files, prepared exactly as the bundle's training data.

    table = predict_recordings(predictor, "new/manifest.jsonl")       # python -m harjax.predict --recordings=M
    prediction = predict_recording(predictor, clip="c.mp4", sensors={"wrist": "w.csv"}, context="...")

Each row is aligned with the bundle's build settings (harjax/recordings/sensors.py: its rate, coverage and gap
rules), centre-cropped to the training length, standardised as in training, and its clip embedded with the video
model, prompt set and embedding kind the training data was extracted with (harjax/video/extractor.py, the
`extract` extra). A row that cannot be prepared (a missing or undecodable file, sensors that do not cover the
clip, other channels, a label the bundle does not know) is refused by row: nothing is written. A model trained
without video needs no clip (one given still sets the span the sensors are aligned to).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from harjax import errors
from harjax.recordings import manifest, sensors
from harjax.serving import batch, predictor as predictor_lib
from harjax.video import decoding, families, soft_prompt


def _preparation(predictor: predictor_lib.Predictor) -> dict[str, Any]:
    """The bundle's alignment settings and training crop; a bundle not trained on a recordings build has none."""
    inputs = predictor.bundle.meta["inputs"]
    preparation = inputs.get("preparation") or {}
    if not preparation.get("alignment"):
        raise predictor_lib.InputError(
            "the bundle was not trained on a dataset built from a recordings manifest, so how its recordings were "
            "aligned is unknown; predict on arrays with --input or --stream instead"
        )
    return preparation


class _VideoEmbedder:
    """The bundle's video model, loaded on first use, with its prompt set and embedding kind."""

    def __init__(self, predictor: predictor_lib.Predictor, device: str):
        source = predictor.bundle.meta["inputs"]["video_source"]
        self.extraction = source.get("extraction", {})
        self.kind = source.get("embedding")
        self.device = device
        self._extractor = None
        if not self.extraction.get("model") or not self.kind:
            raise predictor_lib.InputError(
                f"the bundle reads video but does not record which model made its embeddings ({source}); "
                "predict with precomputed embeddings (--input) instead"
            )

    def __call__(self, recording: Any) -> np.ndarray:
        self._extractor = self._extractor or self._load()
        job = decoding.ClipJob(
            recording.id, recording.clip, self._context(recording), recording.clip_start_s, recording.clip_end_s
        )
        try:
            arrays = self._extractor.embed_clip(job)
        except Exception as error:  # noqa: BLE001  PyAV raises many types; the row and the clip are named
            raise predictor_lib.InputError(
                f"row {recording.row} ({recording.id}): the clip {recording.clip} cannot be decoded: {error}"
            ) from None
        return arrays[self.kind].astype(np.float32)  # the stored float16, as training read it

    def _load(self) -> Any:
        """The extractor of the bundle's model, family and learned prompt (the one the training data was read with)."""
        from harjax.video import extractor as extractor_lib

        model = self.extraction["model"]
        if not os.path.isdir(model) and self.extraction.get("revision") in ("local", None):
            raise predictor_lib.InputError(
                f"the bundle's video model {model!r} (a local folder when it was trained) is not here"
            )
        revision = self.extraction.get("revision")
        pinned = revision if revision not in (None, "local", "unknown", "built in process, not loaded") else None
        try:
            extractor = extractor_lib.Extractor(model, self.device, revision=pinned)
        except (OSError, ValueError) as error:
            raise predictor_lib.InputError(f"the bundle's video model {model!r} cannot be loaded: {error}") from None
        recorded = self.extraction.get("family", families.LEGACY_METADATA["family"])
        if extractor.family.name != recorded:
            raise predictor_lib.InputError(
                f"the bundle's embeddings come from a {recorded} model, but {model!r} is a "
                f"{extractor.family.name} model"
            )
        learned = self.extraction.get("learned_prompt")
        if learned:  # carried whole by the bundle (the extraction's metadata)
            extractor.attach_prompt(soft_prompt.from_record(learned), learned)
        return extractor

    def _context(self, recording: Any) -> str:
        """The row's context under the bundle's prompt set (a learned prompt's: the set it was learned after)."""
        learned = self.extraction.get("learned_prompt")
        prompt_set = learned["base_prompt_set"] if learned else self.extraction["prompt_set"]
        return manifest.context(prompt_set, recording)


def _prepare(
    predictor: predictor_lib.Predictor, recordings: list[Any], device: str
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """(sensor [T_i, C] per row, its mask, video [N, ...] or None): every row prepared, or the first bad one refused."""
    bundle = predictor.bundle
    preparation = _preparation(predictor)
    alignment, max_length = preparation["alignment"], int(preparation["max_length"])
    embed = _VideoEmbedder(predictor, device) if bundle.uses_video else None
    values, masks, videos = [], [], []
    for recording in recordings:
        where = f"row {recording.row} ({recording.id})"
        if recording.label is not None and recording.label not in bundle.class_names:
            raise predictor_lib.InputError(
                f"{where}: label {recording.label!r} is none of the bundle's {len(bundle.class_names)} classes"
            )
        if embed is not None and recording.clip is None:
            raise predictor_lib.InputError(f"{where}: the bundle's model reads video, but the row names no 'clip'")
        try:
            aligned = sensors.align(
                recording, alignment["rate_hz"], alignment["min_coverage"], alignment["max_gap_periods"]
            )
        except errors.UserError as error:
            raise predictor_lib.InputError(str(error)) from None
        if sorted(aligned.channel_names) == sorted(bundle.channel_names):  # the same streams, listed in any order
            aligned = sensors.in_channel_order(aligned, bundle.channel_names)
        else:
            raise predictor_lib.InputError(
                f"{where}: sensor channels {list(aligned.channel_names)} are not the bundle's "
                f"{list(bundle.channel_names)}"
            )
        start = max(len(aligned.sensor) - max_length, 0) // 2  # the evaluation's centred crop
        values.append(aligned.sensor[start : start + max_length])
        masks.append(aligned.mask[start : start + max_length])
        if embed is not None:
            videos.append(embed(recording))
    return values, masks, np.stack(videos) if videos else None


def _padded(values: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, C] and [N, T] padded to the longest (the model is invariant to padding)."""
    steps = max(len(value) for value in values)
    sensor = np.zeros((len(values), steps, values[0].shape[1]), np.float32)
    mask = np.zeros((len(values), steps), bool)
    for row, (value, recorded) in enumerate(zip(values, masks, strict=True)):
        sensor[row, : len(value)], mask[row, : len(value)] = value, recorded
    return sensor, mask


def predict_recordings(
    predictor: predictor_lib.Predictor, manifest_path: str, batch_size: int = 256, device: str = "cpu"
) -> batch.PredictionTable:
    """One row per manifest row: its id, the prediction, the top-5, and its label where the manifest gives one."""
    recordings = manifest.read(manifest_path)
    values, masks, video = _prepare(predictor, recordings, device)
    rows = []
    for start in range(0, len(recordings), batch_size):
        part = slice(start, start + batch_size)
        sensor, mask = _padded(values[part], masks[part])
        result = predictor.predict_batch(sensor, mask, None if video is None else video[part], origin=manifest_path)
        rows += batch.prediction_rows(result, start)
    for row, recording in zip(rows, recordings, strict=True):
        row["id"] = recording.id
        if recording.label is not None:
            row["label"] = recording.label
    labelled = any(recording.label is not None for recording in recordings)
    return batch.PredictionTable(batch.COLUMNS + ("id",) + (("label",) if labelled else ()), rows)


def predict_recording(
    predictor: predictor_lib.Predictor,
    sensors: Mapping[str, Any],
    clip: str | None = None,
    context: str = "",
    device: str = "cpu",
    **columns: Any,
) -> predictor_lib.Predictions:
    """One (clip, sensor files) pair, read as a manifest row of one (errors name 'predict_recording').

    `sensors`: {stream: path or options, as in a manifest}; `columns`: any other manifest column (offsets, a span).
    """
    row = {"id": "recording", "sensors": dict(sensors), "context": context, **columns}
    if clip is not None:
        row["clip"] = clip
    recording = manifest.parse_row(row, 1, "predict_recording", os.getcwd())  # relative paths: from here
    values, masks, video = _prepare(predictor, [recording], device)
    sensor, mask = _padded(values, masks)
    return predictor.predict_batch(sensor, mask, video, origin=recording.id)
