"""The model bundle: everything inference needs of a trained model, and nothing of training.

A bundle (written by `python -m harjax.export`, harjax/serving/export.py) is a directory: bundle.json (what the
model is and expects: its config, class names, the sensor channels in order, their sampling rate and
normalisation, what produced the video embeddings, versions, the metrics of the exported checkpoint, whether the
run had finished training ('training': last_step, num_steps, finished; absent in earlier bundles), the
parameters' checksum), params.msgpack (parameters and the video standardisation statistics), MODEL_CARD.md and,
when the training data was readable at export, calibration.npz (training windows for int8 calibration).
Loading checks all of it before anything runs: a damaged, incomplete or mixed-up bundle fails naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import flax
import flax.traverse_util
import jax
import ml_collections
import numpy as np

import harjax
from harjax import errors
from harjax.data import batch as batch_lib
from harjax.models import ensemble, har_model

BUNDLE_FORMAT = 2  # bumped whenever a bundle's layout changes; a reader refuses formats newer than its own


def format_for(ensemble_size: int) -> int:
    """The bundle format a model needs: 2 when its parameters have a member axis (an ensemble), else 1.

    A single model's bundle is still written as format 1, so harjax versions before ensembles keep reading it,
    and refuse an ensemble's naming the upgrade.
    """
    return 1 if ensemble_size == 1 else BUNDLE_FORMAT


BUNDLE_FILE = "bundle.json"
PARAMS_FILE = "params.msgpack"
CARD_FILE = "MODEL_CARD.md"
# Training windows as the exported models read them (standardised), for int8 calibration; absent when the training
# data could not be read at export, or in bundles of earlier harjax versions.
CALIBRATION_FILE = "calibration.npz"


class BundleError(errors.UserError):
    """A bundle that cannot be used; the message names the file and the problem."""


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise BundleError(f"{path}: missing; a bundle is a directory written by python -m harjax.export")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: not valid JSON ({error}); the bundle is corrupt, export it again") from error


def inference_model(meta: Mapping[str, Any]) -> har_model.HARModel:
    """The bundle's model, forward only.

    The encoder blocks come without their hand-written backward, which changes no value and which exporters do not
    need.
    """
    config = ml_collections.ConfigDict({"model": dict(meta["config"]["model"]), "loss": dict(meta["config"]["loss"])})
    config.model.encoder_backward = "autodiff"
    return har_model.build_model(config, len(meta["class_names"]))


def is_bundle(directory: str) -> bool:
    """Whether `directory` is a harjax bundle: its bundle.json declares a bundle format."""
    try:
        with open(os.path.join(directory, BUNDLE_FILE)) as f:
            return isinstance(json.load(f).get("bundle_format"), int)
    except (OSError, ValueError, AttributeError):
        return False


@dataclasses.dataclass(frozen=True)
class Bundle:
    directory: str
    meta: dict[str, Any]
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}, numpy

    @classmethod
    def load(cls, directory: str) -> Bundle:
        if not os.path.isdir(directory):
            raise BundleError(f"{directory}: no such bundle directory (python -m harjax.export writes one)")
        meta = _read_json(os.path.join(directory, BUNDLE_FILE))
        found = meta.get("bundle_format")
        if not isinstance(found, int):
            raise BundleError(f"{os.path.join(directory, BUNDLE_FILE)}: no 'bundle_format'; not a harjax bundle")
        if found > BUNDLE_FORMAT:
            raise BundleError(
                f"{os.path.join(directory, BUNDLE_FILE)}: written by harjax {meta.get('harjax_version')} "
                f"in bundle format {found}; this harjax ({harjax.__version__}) reads formats up to "
                f"{BUNDLE_FORMAT}: upgrade harjax"
            )
        path = os.path.join(directory, PARAMS_FILE)
        if not os.path.exists(path):
            raise BundleError(f"{path}: missing; the bundle is incomplete, export it again")
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != meta.get("params_sha256"):
            raise BundleError(
                f"{path}: unreadable: its checksum is not the one bundle.json records (damaged or "
                "replaced); export the bundle again"
            )
        try:
            variables = flax.serialization.msgpack_restore(data)
        except Exception as error:  # msgpack raises several types on damaged bytes
            raise BundleError(
                f"{path}: unreadable ({type(error).__name__}: {error}); export the bundle again"
            ) from error
        bundle = cls(directory, meta, variables)
        bundle._check_parameters(path)
        return bundle

    def _check_parameters(self, path: str) -> None:
        model = inference_model(self.meta)
        expected = jax.eval_shape(
            lambda: ensemble.init(lambda key: model.init(key, self.example(1), train=False), 0, self.ensemble_size)
        )
        got = jax.tree.map(lambda leaf: (tuple(np.shape(leaf)), str(np.asarray(leaf).dtype)), self.variables)
        # as exported (a model whose head is fitted has no trained parameters)
        expected = {"params": expected.get("params", {}), "batch_stats": expected.get("batch_stats", {})}
        want = jax.tree.map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), expected)
        if got != want:
            got, want = (flax.traverse_util.flatten_dict(tree, sep="/") for tree in (got, want))
            name = sorted(key for key in got.keys() | want.keys() if got.get(key) != want.get(key))[0]
            found = "missing" if name not in got else f"shape {got[name][0]}"
            expected_text = "none" if name not in want else f"shape {want[name][0]}"
            raise BundleError(
                f"{path}: the parameters do not fit the model bundle.json describes (class count "
                f"{len(self.meta['class_names'])}, model config): {name} is {found}, expected {expected_text} (a "
                "fitted state such as MiniRocket's biases included); the bundle is corrupt or mixed up"
            )

    @property
    def uses_video(self) -> bool:
        return self.meta["config"]["model"]["modalities"] in ("both", "video")

    @property
    def ensemble_size(self) -> int:
        """Members whose mean probabilities the model predicts (1: a single model; harjax/models/ensemble.py)."""
        return ensemble.ensemble_size(self.meta["config"]["model"])

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

    def calibration(self) -> dict[str, np.ndarray]:
        """The bundle's calibration windows: 'sensor' [N, T, C], 'sensor_mask' [N, T] (and 'video', 'video_present').

        Fails naming the file when the bundle holds none, or none readable.
        """
        path = os.path.join(self.directory, CALIBRATION_FILE)
        why = (self.meta.get("calibration") or {}).get("missing", "the bundle predates calibration windows")
        if not os.path.exists(path):
            raise BundleError(
                f"{path}: missing ({why}); export the bundle again from its workdir with the training data in place"
            )
        try:
            with np.load(path, allow_pickle=False) as stored:
                windows = {name: stored[name] for name in stored.files}
        except (ValueError, OSError) as error:
            raise BundleError(f"{path}: unreadable ({error}); export the bundle again") from error
        if batch_lib.SENSOR not in windows or not len(windows[batch_lib.SENSOR]):
            raise BundleError(f"{path}: holds no calibration windows; export the bundle again from its workdir")
        return windows

    def example(self, rows: int, steps: int = 16) -> dict[str, np.ndarray]:
        """A zero batch of the bundle's input shapes (what exporters trace with)."""
        batch = {
            batch_lib.SENSOR: np.zeros((rows, steps, len(self.channel_names)), np.float32),
            batch_lib.SENSOR_MASK: np.ones((rows, steps), bool),
        }
        if self.uses_video:
            batch[batch_lib.VIDEO] = np.zeros((rows, *self.video_shape), np.float32)
            batch[batch_lib.VIDEO_PRESENT] = np.ones(rows, bool)
        return batch
