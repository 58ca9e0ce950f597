"""A trained model as a distillation teacher (config.distill): its logits on every training example of a student.

Cross-modal distillation carries what a camera saw into a sensor-only model, and the same loss compresses an
ensemble into one network (Hinton et al. 2015; the loss is harjax/training/losses.py's `distillation`). The
teacher is a bundle or a training workdir (its best checkpoint), named by config.distill.teacher.

Choices, and why:
- The teacher's logits are computed once per training example, as evaluation reads it (standardised, not augmented,
  its fixed camera), before step 0, and cached in the student's workdir (teacher_logits.npz) with the teacher's
  identity (its parameters' SHA-256) and the data's fingerprint. A resume reads them back, so it continues exactly; a
  resume with another teacher is refused like one on other data (the identity is part of the training split's
  fingerprint). With config.distill.targets='augmented' the train step instead applies the teacher (`apply`) to each
  augmented batch, the view the student sees (Beyer et al. 2022's consistent teaching): it costs a teacher forward
  every step, and on CricketX's validation split it did better than cached targets at the same temperature (0.744
  against 0.698 macro-F1) though neither beat the student trained alone (benchmarks/RESULTS.md).
- A teacher must have been trained on the student's training split: the same data (fingerprint) and the same
  number of examples (a teacher that held out less validation saw the student's validation examples, which would
  then select the student's checkpoint with the teacher's memory), the same classes, channels, sampling rate and
  normalisation (its logits are computed on the student's standardised inputs). Anything else is refused in one
  line naming both sides, before training writes anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib
from harjax.serving import bundle as bundle_lib, export, predictor as predictor_lib
from harjax.training import workdir as workdir_lib

_FLAG = "config.distill.teacher"


class TeacherError(errors.UserError):
    """A teacher that cannot teach this student; the message names the setting and both sides."""


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A loaded teacher: its model as a bundle (in memory for a workdir) and what identifies it."""

    source: str  # the bundle or workdir it was read from
    bundle: bundle_lib.Bundle
    identity: str  # SHA-256 of its serialised variables (a bundle's params_sha256)

    @property
    def reads_video(self) -> bool:
        return self.bundle.uses_video

    @property
    def variables(self) -> dict:
        return self.bundle.variables

    def apply(self, variables: dict, batch: dict[str, jax.Array]) -> jax.Array:
        """[B, classes] the teacher's logits on a standardised batch; pure, so the train step calls it under jit."""
        video = present = None
        if self.reads_video:
            video = batch[batch_lib.VIDEO]
            present = batch.get(batch_lib.VIDEO_PRESENT, jnp.ones(video.shape[:1], bool))
        model = bundle_lib.inference_model(self.bundle.meta)
        return predictor_lib.forward(
            model,
            self.bundle.ensemble_size,
            variables,
            batch[batch_lib.SENSOR],
            batch[batch_lib.SENSOR_MASK],
            video,
            present,
        )

    def attach(self, split: batch_lib.Split, workdir: str, batch_size: int) -> batch_lib.WithTargets:
        """The training split with the teacher's logits on each example riding in its batches."""
        self.check(split)
        return batch_lib.WithTargets(
            split, batch_lib.TEACHER_LOGITS, self._cached_logits(split, workdir, batch_size), self.identity
        )

    def check(self, split: batch_lib.Split) -> None:
        """Refuses a teacher not trained on this training split, naming what differs."""
        meta = self.bundle.meta
        where = f"{_FLAG}={self.source}"
        if self.bundle.class_names != tuple(split.class_names):
            raise TeacherError(
                f"{where}: the teacher's {len(self.bundle.class_names)} classes "
                f"({_listed(self.bundle.class_names)}) are not the student's data's {len(split.class_names)} "
                f"({_listed(split.class_names)})"
            )
        if self.bundle.uses_sensor and self.bundle.channel_names != tuple(split.channel_names):
            raise TeacherError(
                f"{where}: the teacher reads channels {list(self.bundle.channel_names)}, the student's data has "
                f"{list(split.channel_names)}"
            )
        if not np.isclose(self.bundle.sampling_rate_hz, split.sampling_rate_hz):
            raise TeacherError(
                f"{where}: the teacher was trained at {self.bundle.sampling_rate_hz:g} Hz, the student's data is at "
                f"{split.sampling_rate_hz:g} Hz"
            )
        if not _same_normalization(meta["inputs"]["normalization"], split.normalization):
            raise TeacherError(
                f"{where}: the teacher's sensors were standardised as "
                f"{_described(meta['inputs']['normalization'], split.normalization)}, the student's as "
                f"{_described(split.normalization, meta['inputs']['normalization'])}; set "
                "config.data.sensor_normalization as the "
                "teacher's run did"
            )
        trained_on = meta["data"]["train"]
        if trained_on["fingerprint"].split("+")[0] != split.fingerprint or trained_on["examples"] != len(split):
            raise TeacherError(
                f"{where}: the teacher was trained on {trained_on['examples']} examples of {trained_on['origin']} "
                f"(fingerprint {trained_on['fingerprint']}), the student trains on {len(split)} of {split.origin} "
                f"(fingerprint {split.fingerprint}); a teacher must be trained on the student's training split (the "
                "same data and config.data.validation_fraction)"
            )

    def logits(self, split: batch_lib.Split, batch_size: int) -> np.ndarray:
        """[N, classes] the teacher's logits on every example of `split`, as evaluation reads it."""
        apply = jax.jit(self.apply)
        variables = jax.device_put(self.bundle.variables)
        rows = []
        for start in range(0, len(split), batch_size):
            batch = batch_lib.examples(split, np.arange(start, min(len(split), start + batch_size)))
            count = len(batch[batch_lib.LABEL])
            padded = batch_lib.pad_batch(batch, batch_size)  # one compiled shape
            rows.append(np.asarray(apply(variables, padded), np.float32)[:count])
        return np.concatenate(rows)

    def _cached_logits(self, split: batch_lib.Split, workdir: str, batch_size: int) -> np.ndarray:
        path = os.path.join(workdir, workdir_lib.TEACHER_CACHE)
        if os.path.exists(path):
            with np.load(path) as cached:
                if (
                    str(cached["identity"]) == self.identity
                    and str(cached["fingerprint"]) == split.fingerprint
                    and cached["logits"].shape == (len(split), len(split.class_names))
                ):
                    logging.info(
                        "teacher %s: its logits on %d training examples read from %s", self.source, len(split), path
                    )
                    return cached["logits"]
            logging.info("%s holds another teacher's or data's logits; computing this teacher's", path)
        logits = self.logits(split, batch_size)
        if jax.process_index() == 0:
            partial = os.path.join(workdir, f".{workdir_lib.TEACHER_CACHE}.partial.npz")
            np.savez(partial, logits=logits, identity=self.identity, fingerprint=split.fingerprint)
            os.replace(partial, path)  # whole or not at all
        agreement = float(np.mean(logits.argmax(-1) == split.labels))
        logging.info(
            "teacher %s: logits on %d training examples (it agrees with %.1f%% of their labels), cached in %s",
            self.source,
            len(split),
            100 * agreement,
            path,
        )
        return logits


def load(source: str) -> Teacher:
    """The teacher a bundle or a training workdir (its best checkpoint) holds."""
    if bundle_lib.is_bundle(source):
        bundle = bundle_lib.Bundle.load(source)
        return Teacher(source, bundle, bundle.meta["params_sha256"])
    if os.path.exists(os.path.join(source, workdir_lib.CONFIG_FILE)):
        meta, variables = export.checkpoint_contents(source, "best")
        identity = hashlib.sha256(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, variables))).hexdigest()
        return Teacher(source, bundle_lib.Bundle(source, meta, variables), identity)
    raise TeacherError(
        f"{_FLAG}={source}: neither a bundle (no {bundle_lib.BUNDLE_FILE}) nor a training workdir (no "
        f"{workdir_lib.CONFIG_FILE}); name the teacher's workdir or its exported bundle"
    )


def _same_normalization(teacher: dict, student: dict) -> bool:
    if teacher.get("mode") != student.get("mode"):
        return False
    return all(
        np.allclose(np.asarray(teacher.get(key, 0.0)), np.asarray(student.get(key, 0.0)), rtol=1e-5, atol=1e-6)
        for key in ("mean", "std")
    )


def _described(applied: dict, other: dict) -> str:
    """A normalisation as the refusal names it: its mode, and whether its statistics are what differs."""
    same_mode = applied.get("mode") == other.get("mode")
    return f"'{applied.get('mode')}'" + (" with other statistics" if same_mode and "mean" in applied else "")


def _listed(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
