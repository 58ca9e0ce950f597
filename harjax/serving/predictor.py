"""Predictions of a bundle's model on raw recordings: what a device app calls.

    predictor = serving.Predictor.load("bundle/")       # once: no dataset, no optimizer state, no workdir
    result = predictor.predict(window)                   # window [T, C] raw sensor values, at the bundle's rate
    result.label, result.probabilities, result.alpha

Inputs are raw: sensors are standardised here as in training (harjax/data/normalization.py), with the bundle's
training statistics or each recording by its own, never with statistics of the input set. A step with a NaN in any
channel is masked out and counted. A model that uses video and is given none stops, unless allowed, in which case
the video is "removed" exactly as in the robustness evaluation (harjax/data/batch.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib, normalization
from harjax.models import ensemble, har_model
from harjax.serving import bundle as bundle_lib

TOP_K = 5


class InputError(errors.UserError):
    """Inputs that do not fit the bundle; the message names the input, the array and what was expected."""


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One row per example of a batch's predictions.

    Logits [N, classes], probabilities [N, classes], alpha [N, K, n] (None without keyless attention), how many
    steps were masked for NaN [N], and whether the video was given [N] (or removed).
    """

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
        return [
            [(self.class_names[i], float(row[i])) for i in indices]
            for indices, row in zip(order, self.probabilities, strict=True)
        ]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One window's prediction (Predictor.predict)."""

    label: str
    probabilities: dict[str, float]  # every class
    top: list[tuple[str, float]]
    alpha: np.ndarray | None  # [K, n]
    nan_steps: int


RUNTIMES = ("jax", "onnx", "onnx_int8", "onnx_fp16")  # 'jax': the bundle's model; else that exported ONNX format


class Predictor:
    """A bundle ready to predict: the model compiled once per input shape, or one of its exported ONNX models.

    runtime 'jax' runs the bundle's Flax model (with its attention weights); an ONNX format runs that folder's
    model.onnx through onnxruntime on `threads` threads, the edge's runtime, on windows of the steps it was
    exported with. Both standardise raw inputs the same way, here.
    """

    def __init__(
        self, bundle: bundle_lib.Bundle, allow_missing_video: bool = False, runtime: str = "jax", threads: int = 1
    ):
        self.bundle = bundle
        self.allow_missing_video = allow_missing_video
        self.runtime = runtime
        applied = bundle.meta["inputs"]["normalization"]
        self._normalization = applied["mode"]
        self._mean = np.asarray(applied.get("mean", 0.0), np.float32)  # 'dataset': the training statistics
        self._std = np.asarray(applied.get("std", 1.0), np.float32)
        if runtime == "jax":
            model = bundle_lib.inference_model(bundle.meta)
            size = bundle.ensemble_size
            apply = jax.jit(lambda variables, batch: ensemble.apply(model.apply, variables, batch, size, train=False))
            variables = jax.device_put(bundle.variables)
            self._run = lambda batch: jax.device_get(apply(variables, batch))
        elif runtime in RUNTIMES:
            self._run = _onnx_runner(bundle, runtime, threads)
        else:
            raise InputError(f"--runtime={runtime}: choose one of {RUNTIMES}")

    @classmethod
    def load(
        cls, directory: str, allow_missing_video: bool = False, runtime: str = "jax", threads: int = 1
    ) -> Predictor:
        return cls(bundle_lib.Bundle.load(directory), allow_missing_video, runtime, threads)

    def prepare(
        self,
        sensor: np.ndarray,
        sensor_mask: np.ndarray | None = None,
        video: np.ndarray | None = None,
        channel_names: Sequence[str] | None = None,
        origin: str = "input",
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Raw inputs -> (the model's batch, NaN steps masked per example [N]); errors name `origin`."""
        bundle = self.bundle
        sensor = np.asarray(sensor)
        if sensor.ndim != 3 or not np.issubdtype(sensor.dtype, np.floating):
            raise InputError(f"{origin}: 'sensor' must be float [N, T, C], got {sensor.dtype} {list(sensor.shape)}")
        if channel_names is not None and tuple(channel_names) != bundle.channel_names:
            missing = [name for name in bundle.channel_names if name not in channel_names]
            raise InputError(
                f"{origin}: sensor channels {list(channel_names)} are not the bundle's "
                f"{list(bundle.channel_names)}" + (f" (missing: {missing})" if missing else " (another order)")
            )
        if sensor.shape[-1] != len(bundle.channel_names):
            raise InputError(
                f"{origin}: 'sensor' has {sensor.shape[-1]} channels; the bundle's model reads "
                f"{len(bundle.channel_names)}: {', '.join(bundle.channel_names)}"
            )
        n, steps = sensor.shape[:2]
        mask = np.ones((n, steps), bool) if sensor_mask is None else np.asarray(sensor_mask)
        if mask.shape != (n, steps) or not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
            raise InputError(
                f"{origin}: 'sensor_mask' must be bool [N, T] = [{n}, {steps}], got {mask.dtype} {list(mask.shape)}"
            )
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise InputError(f"{origin}: 'sensor_mask' must hold 0/1 or bool values, got other integers")
        with np.errstate(over="ignore", invalid="ignore"):
            values = sensor.astype(np.float32)  # beyond float32's range is Inf, masked like NaN below
        nan_steps = mask.astype(bool) & ~np.isfinite(values).all(axis=-1)
        mask = mask.astype(bool) & ~nan_steps
        if bundle.uses_sensor and n and not mask.any(axis=1).all():
            empty = np.flatnonzero(~mask.any(axis=1)).tolist()
            raise InputError(f"{origin}: examples {empty[:10]} have no recorded step that is finite")
        standardised = normalization.standardise(
            np.where(np.isfinite(values), values, 0.0).astype(np.float32),
            mask,
            self._normalization,
            self._mean,
            self._std,
        )
        batch = {batch_lib.SENSOR: standardised, batch_lib.SENSOR_MASK: mask}
        if bundle.uses_video:
            batch |= self._video(video, n, origin)
        return batch, nan_steps.sum(axis=1)

    def _video(self, video: np.ndarray | None, n: int, origin: str) -> dict[str, np.ndarray]:
        shape = self.bundle.video_shape
        if video is None:
            if not self.allow_missing_video:
                raise InputError(
                    f"{origin}: no 'video' embeddings, but the bundle's model was trained with both "
                    f"modalities and reads video {list(shape)} per example (extracted as "
                    f"{json.dumps(self.bundle.meta['inputs']['video_source'])[:300]}); give them, or "
                    "predict with the video removed (--allow_missing_video)"
                )
            return {batch_lib.VIDEO: np.zeros((n, *shape), np.float32), batch_lib.VIDEO_PRESENT: np.zeros(n, bool)}
        video = np.asarray(video, np.float32)
        if video.shape != (n, *shape):
            raise InputError(
                f"{origin}: 'video' must be [N, {', '.join(map(str, shape))}] with N = {n}, got {list(video.shape)}"
            )
        if not np.isfinite(video).all():
            raise InputError(f"{origin}: 'video' holds NaN or Inf")
        return {batch_lib.VIDEO: video, batch_lib.VIDEO_PRESENT: np.ones(n, bool)}

    def predict_batch(
        self,
        sensor: np.ndarray,
        sensor_mask: np.ndarray | None = None,
        video: np.ndarray | None = None,
        channel_names: Sequence[str] | None = None,
        origin: str = "input",
    ) -> Predictions:
        batch, nan_steps = self.prepare(sensor, sensor_mask, video, channel_names, origin)
        output = self._run(batch)
        return Predictions(
            logits=output.logits,
            probabilities=np.asarray(jax.nn.softmax(output.logits, axis=-1)),
            alpha=output.alpha,
            nan_steps=nan_steps,
            video_given=batch.get(batch_lib.VIDEO_PRESENT),
            class_names=self.bundle.class_names,
        )

    def predict(self, window: np.ndarray, video: np.ndarray | None = None) -> Prediction:
        """One window [T, C] of raw sensor values (and its video embedding [d_v], when the model reads video)."""
        result = self.predict_batch(np.asarray(window)[None], None, None if video is None else np.asarray(video)[None])
        probabilities = result.probabilities[0]
        return Prediction(
            label=result.labels()[0],
            probabilities={name: float(p) for name, p in zip(result.class_names, probabilities, strict=True)},
            top=result.top()[0],
            alpha=None if result.alpha is None else result.alpha[0],
            nan_steps=int(result.nan_steps[0]),
        )


class _OnnxOutput(NamedTuple):
    logits: np.ndarray
    alpha: None = None  # an exported model returns logits only


def _onnx_runner(bundle: bundle_lib.Bundle, runtime: str, threads: int) -> Callable[[dict], _OnnxOutput]:
    """batch -> logits of the bundle's `runtime` folder's model.onnx, on windows of the steps it was exported with."""
    try:
        import onnxruntime
    except ImportError as error:
        raise InputError(f"--runtime={runtime} needs onnxruntime: pip install -e '.[export]'") from error
    folder = os.path.join(bundle.directory, runtime)
    path = os.path.join(folder, "model.onnx")
    if not os.path.exists(path):
        raise bundle_lib.BundleError(
            f"{path}: missing; export it first (python -m harjax.export --bundle={bundle.directory} --format={runtime})"
        )
    with open(os.path.join(folder, "signature.json")) as f:
        steps = json.load(f)["steps"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # errors only: float16 graphs warn of constants it cannot fold, harmlessly
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    order = [batch_lib.SENSOR, batch_lib.SENSOR_MASK] + (
        [batch_lib.VIDEO, batch_lib.VIDEO_PRESENT] if bundle.uses_video else []
    )

    def run(batch: dict[str, np.ndarray]) -> _OnnxOutput:
        got = batch[batch_lib.SENSOR].shape[1]
        if got != steps:
            raise InputError(
                f"{path} reads windows of {steps} steps ({steps / bundle.sampling_rate_hz:g} s at "
                f"{bundle.sampling_rate_hz:g} Hz), got {got}; choose that window, or export with --window_steps={got}"
            )
        feed = {name: np.asarray(batch[key]) for name, key in zip(names, order, strict=True)}
        return _OnnxOutput(session.run(None, feed)[0])

    return run


def forward(
    model: har_model.HARModel,
    ensemble_size: int,
    variables: Any,
    sensor: jax.Array,
    sensor_mask: jax.Array,
    video: jax.Array | None = None,
    video_present: jax.Array | None = None,
) -> jax.Array:
    """Logits [N, classes] from standardised inputs (an ensemble's: its members' mean probabilities).

    The function the export formats serialise.
    """
    batch = {batch_lib.SENSOR: sensor, batch_lib.SENSOR_MASK: sensor_mask}
    if video is not None:
        batch |= {batch_lib.VIDEO: video, batch_lib.VIDEO_PRESENT: video_present}
    return ensemble.apply(model.apply, variables, batch, ensemble_size, train=False).logits.astype(jnp.float32)
