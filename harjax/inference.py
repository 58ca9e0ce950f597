"""Using a trained model: the model bundle, and predictions on raw recordings. What a device app calls:

    predictor = inference.Predictor.load("bundle/")      # once: no dataset, no optimizer state, no workdir
    result = predictor.predict(window)                   # window [T, C] raw sensor values, at the bundle's rate
    result.label, result.probabilities, result.alpha

A bundle (written by `python -m harjax.export`) is a directory: bundle.json (what the model is and expects: its
config, class names, the sensor channels in order, their sampling rate and normalisation, what produced the video
embeddings, versions, the metrics of the exported checkpoint, the parameters' checksum), params.msgpack
(parameters and the video standardisation statistics) and MODEL_CARD.md. Inputs are raw: sensors are
standardised here as in training (harjax/data/normalization.py), with the bundle's training statistics or each
recording by its own, never with statistics of the input set. A step with a NaN in any channel is masked out and
counted. A model that uses video and is given none stops, unless allowed, in which case the video is "removed"
exactly as in the robustness evaluation (harjax/data/batch.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import harjax
from harjax.data import batch as batch_lib, normalization
from harjax.models.har_model import HARModel, build_model

BUNDLE_FORMAT = 1  # bumped whenever a bundle's layout changes; a reader refuses formats newer than its own
BUNDLE_FILE = "bundle.json"
PARAMS_FILE = "params.msgpack"
CARD_FILE = "MODEL_CARD.md"
TOP_K = 5


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


class InputError(ValueError):
    """Inputs that do not fit the bundle; the message names the input, the array and what was expected."""


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise BundleError(f"{path}: missing; a bundle is a directory written by python -m harjax.export")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: not valid JSON ({error}); the bundle is corrupt, export it again") from error


def inference_model(meta: Mapping[str, Any]) -> HARModel:
    """The bundle's model, forward only (the encoder blocks without their hand-written backward, which changes
    no value and which exporters do not need)."""
    config = ml_collections.ConfigDict({"model": dict(meta["config"]["model"]), "loss": dict(meta["config"]["loss"])})
    config.model.encoder_backward = "autodiff"
    return build_model(config, len(meta["class_names"]))


@dataclasses.dataclass(frozen=True)
class Bundle:
    directory: str
    meta: dict[str, Any]
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}, numpy

    @classmethod
    def load(cls, directory: str) -> "Bundle":
        if not os.path.isdir(directory):
            raise BundleError(f"{directory}: no such bundle directory (python -m harjax.export writes one)")
        meta = _read_json(os.path.join(directory, BUNDLE_FILE))
        found = meta.get("bundle_format")
        if not isinstance(found, int):
            raise BundleError(f"{os.path.join(directory, BUNDLE_FILE)}: no 'bundle_format'; not a harjax bundle")
        if found > BUNDLE_FORMAT:
            raise BundleError(f"{os.path.join(directory, BUNDLE_FILE)}: written by harjax {meta.get('harjax_version')} "
                              f"in bundle format {found}; this harjax ({harjax.__version__}) reads formats up to "
                              f"{BUNDLE_FORMAT}: upgrade harjax")
        path = os.path.join(directory, PARAMS_FILE)
        if not os.path.exists(path):
            raise BundleError(f"{path}: missing; the bundle is incomplete, export it again")
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != meta.get("params_sha256"):
            raise BundleError(f"{path}: unreadable: its checksum is not the one bundle.json records (damaged or "
                              "replaced); export the bundle again")
        try:
            variables = flax.serialization.msgpack_restore(data)
        except Exception as error:  # msgpack raises several types on damaged bytes
            raise BundleError(f"{path}: unreadable ({type(error).__name__}: {error}); export the bundle again") \
                from error
        bundle = cls(directory, meta, variables)
        bundle._check_parameters(path)
        return bundle

    def _check_parameters(self, path: str) -> None:
        expected = jax.eval_shape(lambda: inference_model(self.meta).init(jax.random.key(0), self.example(1),
                                                                          train=False))
        got = jax.tree.map(lambda leaf: (tuple(np.shape(leaf)), str(np.asarray(leaf).dtype)), self.variables)
        expected = {"params": expected["params"], "batch_stats": expected.get("batch_stats", {})}  # as exported
        want = jax.tree.map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), expected)
        if got != want:
            raise BundleError(f"{path}: the parameters do not fit the model bundle.json describes (class count "
                              f"{len(self.meta['class_names'])}, model config); the bundle is corrupt or mixed up")

    @property
    def uses_video(self) -> bool:
        return self.meta["config"]["model"]["modalities"] in ("both", "video")

    @property
    def uses_sensor(self) -> bool:
        return self.meta["config"]["model"]["modalities"] in ("both", "sensor")

    @property
    def video_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["inputs"]["video_shape"])

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self.meta["inputs"]["channel_names"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def sampling_rate_hz(self) -> float:
        return float(self.meta["inputs"]["sampling_rate_hz"])

    def example(self, rows: int, steps: int = 16) -> dict[str, np.ndarray]:
        """A zero batch of the bundle's input shapes (what exporters trace with)."""
        batch = {batch_lib.SENSOR: np.zeros((rows, steps, len(self.channel_names)), np.float32),
                 batch_lib.SENSOR_MASK: np.ones((rows, steps), bool)}
        if self.uses_video:
            batch[batch_lib.VIDEO] = np.zeros((rows, *self.video_shape), np.float32)
            batch[batch_lib.VIDEO_PRESENT] = np.ones(rows, bool)
        return batch


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per example: logits [N, classes], probabilities [N, classes], alpha [N, K, n] (None without keyless
    attention), how many steps were masked for NaN [N], and whether the video was given [N] (or removed)."""

    logits: np.ndarray
    probabilities: np.ndarray
    alpha: np.ndarray | None
    nan_steps: np.ndarray
    video_given: np.ndarray | None  # None: the model reads no video
    class_names: tuple[str, ...]

    def labels(self) -> list[str]:
        return [self.class_names[index] for index in self.probabilities.argmax(-1)]

    def top(self, k: int = TOP_K) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=-1)[:, :k]
        return [[(self.class_names[i], float(row[i])) for i in indices] for indices, row in zip(order,
                                                                                                 self.probabilities)]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One window's prediction (Predictor.predict)."""

    label: str
    probabilities: dict[str, float]  # every class
    top: list[tuple[str, float]]
    alpha: np.ndarray | None  # [K, n]
    nan_steps: int


class Predictor:
    """A bundle ready to predict: the model compiled once per input shape."""

    def __init__(self, bundle: Bundle, allow_missing_video: bool = False):
        self.bundle = bundle
        self.allow_missing_video = allow_missing_video
        model = inference_model(bundle.meta)
        applied = bundle.meta["inputs"]["normalization"]
        self._normalization = applied["mode"]
        self._mean = np.asarray(applied.get("mean", 0.0), np.float32)  # 'dataset': the training statistics
        self._std = np.asarray(applied.get("std", 1.0), np.float32)
        self._apply = jax.jit(lambda variables, batch: model.apply(variables, batch, train=False))
        self._variables = jax.device_put(bundle.variables)

    @classmethod
    def load(cls, directory: str, allow_missing_video: bool = False) -> "Predictor":
        return cls(Bundle.load(directory), allow_missing_video)

    def prepare(self, sensor: np.ndarray, sensor_mask: np.ndarray | None = None, video: np.ndarray | None = None,
                channel_names: Sequence[str] | None = None, origin: str = "input") -> tuple[dict[str, np.ndarray],
                                                                                            np.ndarray]:
        """Raw inputs -> (the model's batch, NaN steps masked per example [N]); errors name `origin`."""
        bundle = self.bundle
        sensor = np.asarray(sensor)
        if sensor.ndim != 3 or not np.issubdtype(sensor.dtype, np.floating):
            raise InputError(f"{origin}: 'sensor' must be float [N, T, C], got {sensor.dtype} {list(sensor.shape)}")
        if channel_names is not None and tuple(channel_names) != bundle.channel_names:
            missing = [name for name in bundle.channel_names if name not in channel_names]
            raise InputError(f"{origin}: sensor channels {list(channel_names)} are not the bundle's "
                             f"{list(bundle.channel_names)}" + (f" (missing: {missing})" if missing else
                                                                 " (another order)"))
        if sensor.shape[-1] != len(bundle.channel_names):
            raise InputError(f"{origin}: 'sensor' has {sensor.shape[-1]} channels; the bundle's model reads "
                             f"{len(bundle.channel_names)}: {', '.join(bundle.channel_names)}")
        n, steps = sensor.shape[:2]
        mask = np.ones((n, steps), bool) if sensor_mask is None else np.asarray(sensor_mask).astype(bool)
        if mask.shape != (n, steps):
            raise InputError(f"{origin}: 'sensor_mask' must be [N, T] = [{n}, {steps}], got {list(mask.shape)}")
        nan_steps = mask & ~np.isfinite(sensor).all(axis=-1)
        mask = mask & ~nan_steps
        if bundle.uses_sensor and n and not mask.any(axis=1).all():
            empty = np.flatnonzero(~mask.any(axis=1)).tolist()
            raise InputError(f"{origin}: examples {empty[:10]} have no recorded step without NaN")
        standardised = normalization.standardise(np.nan_to_num(sensor).astype(np.float32), mask, self._normalization,
                                                 self._mean, self._std)
        batch = {batch_lib.SENSOR: standardised, batch_lib.SENSOR_MASK: mask}
        if bundle.uses_video:
            batch |= self._video(video, n, origin)
        return batch, nan_steps.sum(axis=1)

    def _video(self, video: np.ndarray | None, n: int, origin: str) -> dict[str, np.ndarray]:
        shape = self.bundle.video_shape
        if video is None:
            if not self.allow_missing_video:
                raise InputError(f"{origin}: no 'video' embeddings, but the bundle's model was trained with both "
                                 f"modalities and reads video {list(shape)} per example (extracted as "
                                 f"{json.dumps(self.bundle.meta['inputs']['video_source'])[:300]}); give them, or "
                                 "predict with the video removed (--allow_missing_video)")
            return {batch_lib.VIDEO: np.zeros((n, *shape), np.float32), batch_lib.VIDEO_PRESENT: np.zeros(n, bool)}
        video = np.asarray(video, np.float32)
        if video.shape != (n, *shape):
            raise InputError(f"{origin}: 'video' must be [N, {', '.join(map(str, shape))}] with N = {n}, got "
                             f"{list(video.shape)}")
        if not np.isfinite(video).all():
            raise InputError(f"{origin}: 'video' holds NaN or Inf")
        return {batch_lib.VIDEO: video, batch_lib.VIDEO_PRESENT: np.ones(n, bool)}

    def predict_batch(self, sensor: np.ndarray, sensor_mask: np.ndarray | None = None,
                      video: np.ndarray | None = None, channel_names: Sequence[str] | None = None,
                      origin: str = "input") -> Predictions:
        batch, nan_steps = self.prepare(sensor, sensor_mask, video, channel_names, origin)
        output = jax.device_get(self._apply(self._variables, batch))
        return Predictions(logits=output.logits, probabilities=np.asarray(jax.nn.softmax(output.logits, axis=-1)),
                           alpha=output.alpha, nan_steps=nan_steps,
                           video_given=batch.get(batch_lib.VIDEO_PRESENT),
                           class_names=self.bundle.class_names)

    def predict(self, window: np.ndarray, video: np.ndarray | None = None) -> Prediction:
        """One window [T, C] of raw sensor values (and its video embedding [d_v], when the model reads video)."""
        result = self.predict_batch(np.asarray(window)[None], None, None if video is None else np.asarray(video)[None])
        probabilities = result.probabilities[0]
        return Prediction(label=result.labels()[0],
                          probabilities={name: float(p) for name, p in zip(result.class_names, probabilities)},
                          top=result.top()[0], alpha=None if result.alpha is None else result.alpha[0],
                          nan_steps=int(result.nan_steps[0]))


def forward(model: HARModel, variables: Any, sensor: jax.Array, sensor_mask: jax.Array, video: jax.Array | None,
            video_present: jax.Array | None) -> jax.Array:
    """Logits [N, classes] from standardised inputs: the function the export formats serialise."""
    batch = {batch_lib.SENSOR: sensor, batch_lib.SENSOR_MASK: sensor_mask}
    if video is not None:
        batch |= {batch_lib.VIDEO: video, batch_lib.VIDEO_PRESENT: video_present}
    return model.apply(variables, batch, train=False).logits.astype(jnp.float32)
