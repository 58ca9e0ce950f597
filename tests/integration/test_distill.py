"""Distillation: a sensor-only student learns from a fused teacher's cached logits, and a wrong teacher is refused."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import sensor_only
from harjax import errors
from harjax.data import batch as batch_lib, synthetic
from harjax.serving import export, predictor as predictor_lib, teacher as teacher_lib
from harjax.training import checkpointing, loop, losses
from tests.conftest import assert_caches_serve_the_same_batches, read_metrics, small_config


def _student_config(teacher_source: str):
    config = small_config(sensor_only)
    config.distill.teacher = teacher_source
    return config


def test_the_loss_is_hintons_softened_kl_scaled_by_t_squared():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
    temperature = 4.0

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher / temperature), softmax(student / temperature)
    expected = temperature**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    np.testing.assert_allclose(losses.distillation(student, teacher, temperature), expected, rtol=1e-5)
    assert float(losses.distillation(teacher, teacher, temperature)) == pytest.approx(0.0, abs=1e-6)
    # Padded rows (weight 0) are left out of the mean.
    weights = jnp.asarray([1, 1, 0, 0, 0])
    np.testing.assert_allclose(
        losses.distillation(student, teacher, temperature, weights),
        losses.distillation(student[:2], teacher[:2], temperature),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "settings,match",
    [({"temperature": 0.0}, "temperature must be > 0"), ({"weight": 1.5}, r"weight must be in \[0, 1\]")],
)
def test_distillation_settings_are_checked(settings, match):
    config = _student_config("teacher")
    config.distill.update(settings)
    with pytest.raises(errors.ConfigError, match=match):
        losses.distillation_settings(config)
    assert losses.distillation_settings(small_config()) is None  # no teacher: no distillation


def test_targets_ride_with_their_own_examples_in_every_data_cache():
    config = small_config()
    train = synthetic.generate(config.data.synthetic, "train", 0)
    evaluation = synthetic.generate(config.data.synthetic, "eval", 0)
    # A target that names its example: the example's first sensor value.
    targets = train.arrays[batch_lib.SENSOR][:, 0, :2].copy()
    wrapped = batch_lib.WithTargets(train, batch_lib.TEACHER_LOGITS, targets, "identity")
    assert_caches_serve_the_same_batches(wrapped, evaluation, batch_size=16, steps=3)
    batch = batch_lib.examples(wrapped, [5, 1, 9])
    np.testing.assert_array_equal(batch[batch_lib.TEACHER_LOGITS], batch[batch_lib.SENSOR][:, 0, :2])
    assert wrapped.fingerprint.startswith(train.fingerprint) and "identity" in wrapped.fingerprint


@pytest.fixture(scope="module")
def distilled(trained_full, tmp_path_factory):
    """A sensor-only student distilled from trained_full's fused model (its workdir as the teacher), 6 steps."""
    teacher = teacher_lib.load(trained_full.workdir)
    workdir = str(tmp_path_factory.mktemp("student"))
    loop.train_and_evaluate(_student_config(trained_full.workdir), workdir, teacher=teacher)
    return teacher, workdir


def test_a_fused_teacher_teaches_a_sensor_only_student_from_cached_logits(distilled):
    teacher, workdir = distilled
    metrics = read_metrics(workdir)
    train_lines = [line for line in metrics if "train/distillation" in line]
    assert train_lines and all(np.isfinite(line["train/distillation"]) for line in train_lines)
    assert not any(key.startswith("eval/distillation") for line in metrics for key in line)  # scored on labels only
    record = json.load(open(os.path.join(workdir, "config.json")))
    assert teacher.identity[:16] in record["data"]["train"]["fingerprint"]
    assert "video" not in record["data"]["train"]["shapes"]  # read by the teacher only
    # The cache holds the teacher's logits on every training example, as evaluation reads them.
    config = small_config(sensor_only)
    train = synthetic.generate(config.data.synthetic, "train", 0)
    with np.load(os.path.join(workdir, "teacher_logits.npz")) as cached:
        assert str(cached["identity"]) == teacher.identity
        logits = cached["logits"]
    assert logits.shape == (len(train), config.data.synthetic.num_classes)
    # ... the logits a user gets from the teacher's model on those raw recordings (their video included).
    raw = train.arrays
    expected = predictor_lib.Predictor(teacher.bundle).predict_batch(
        raw[batch_lib.SENSOR][:8], raw[batch_lib.SENSOR_MASK][:8], raw[batch_lib.VIDEO][:8]
    )
    np.testing.assert_allclose(logits[:8], expected.logits, rtol=1e-4, atol=1e-4)


def test_a_distilled_run_resumes_exactly_and_refuses_another_teacher(trained_full, distilled, tmp_path, monkeypatch):
    teacher, uninterrupted = distilled
    config = _student_config(trained_full.workdir)
    with monkeypatch.context() as patch:
        patch.setattr(checkpointing.PreemptionWatcher, "reached", lambda self, step: step == 3)
        loop.train_and_evaluate(config, str(tmp_path), teacher=teacher)
    other = teacher_lib.load(export.bundle_from_workdir(trained_full.workdir, str(tmp_path / "other"), "3").directory)
    assert other.identity != teacher.identity
    with pytest.raises(errors.UserError, match=r"trained on other data: split 'train' was .*teacher_logits"):
        loop.train_and_evaluate(config, str(tmp_path), teacher=other)
    loop.train_and_evaluate(config, str(tmp_path), teacher=teacher)
    assert read_metrics(str(tmp_path)) == read_metrics(uninterrupted)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"data.synthetic.num_classes": 5}, r"the teacher's 6 classes .* are not the student's data's 5"),
        (
            {"data.sensor_normalization": "recording"},
            r"standardised as 'dataset', the student's as 'recording'",
        ),
        ({"data.validation_fraction": 0.2}, r"trained on 256 examples .* the student trains on 205"),
        ({"data.synthetic.channels": 6}, r"the teacher reads channels \['imu0_x', .*\], the student's data has"),
        ({"data.sampling_rate_hz": 25.0}, r"trained at 50 Hz, the student's data is at 25 Hz"),
    ],
)
def test_a_teacher_of_other_data_is_refused_before_anything_is_written(trained_full, tmp_path, change, match):
    config = _student_config(trained_full.workdir)
    for key, value in change.items():
        section, name = key.rsplit(".", 1)
        target = config
        for part in section.split("."):
            target = target[part]
        target[name] = value
    with pytest.raises(teacher_lib.TeacherError, match=r"^config.distill.teacher=.*" + match):
        loop.train_and_evaluate(config, str(tmp_path), teacher=teacher_lib.load(trained_full.workdir))
    assert not os.path.exists(tmp_path / "config.json") and not os.path.exists(tmp_path / "checkpoints")


def test_a_teacher_that_is_neither_bundle_nor_workdir_and_a_missing_teacher_are_refused(tmp_path, trained_full):
    with pytest.raises(teacher_lib.TeacherError, match=r"neither a bundle .* nor a training workdir"):
        teacher_lib.load(str(tmp_path))
    with pytest.raises(errors.ConfigError, match=r"pass teacher=harjax.serving.teacher.load"):
        loop.train_and_evaluate(_student_config(trained_full.workdir), str(tmp_path))


def test_targets_of_augmented_batches_are_the_per_example_ones_when_nothing_is_augmented(trained_full, tmp_path):
    """targets='augmented' runs the teacher inside the train step on the batch the student sees.

    Without augmentation that batch is the examples as evaluation reads them, so both kinds of target train alike;
    with augmentation the in-step targets follow the augmented windows, and training differs.
    """
    teacher = teacher_lib.load(trained_full.workdir)
    logged = {}
    for targets, jitter in (("example", 0.0), ("augmented", 0.0), ("example", 0.2), ("augmented", 0.2)):
        config = _student_config(trained_full.workdir)
        config.distill.targets = targets
        config.data.augment.jitter = jitter
        workdir = tmp_path / f"{targets}-{jitter}"
        loop.train_and_evaluate(config, str(workdir), teacher=teacher)
        logged[targets, jitter] = [line["train/distillation"] for line in read_metrics(workdir) if "train/loss" in line]
    np.testing.assert_allclose(logged["augmented", 0.0], logged["example", 0.0], rtol=1e-4)
    # With augmentation both students see the same augmented windows; only the targets differ.
    assert not np.allclose(logged["augmented", 0.2], logged["example", 0.2], rtol=1e-3)
