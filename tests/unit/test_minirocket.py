"""The MiniRocket encoder: aeon's features on the same input, masks respected, its state fitted once from training.

aeon's MiniRocket (1.6.0, the transform benchmarks/minirocket_reference.py scores) is the reference: with its own
fitted parameters (dilations, features per dilation, channel subsets, biases) harjax's features equal its transform;
where nothing is drawn at random (one training example, one channel) harjax fits the same biases itself, and from
the same seed it draws the same channel subsets.
"""

import numpy as np
import pytest

from harjax import errors
from harjax.models import har_model, minirocket_encoder as minirocket, ridge
from tests.conftest import small_config

aeon_convolution = pytest.importorskip(
    "aeon.transformations.collection.convolution_based", reason="aeon is in the test extra: pip install -e '.[test]'"
)


def _aeon(series, seed=0):
    """aeon's MiniRocket fitted on series [N, C, T]: (its features, its parameters as a harjax Plan and biases)."""
    transform = aeon_convolution.MiniRocket(random_state=seed).fit(series)
    per_combination, channel_indices, dilations, per_dilation, biases = transform.parameters
    channels = np.zeros((len(per_combination), series.shape[1]), bool)
    ends = np.cumsum(per_combination)
    for row, (start, end) in enumerate(zip(ends - per_combination, ends, strict=True)):
        channels[row, channel_indices[start:end]] = True
    plan = minirocket.Plan(tuple(int(d) for d in dilations), tuple(int(n) for n in per_dilation), channels)
    return transform.transform(series), plan, biases


def _ours(series, plan, biases):
    """harjax's features of series [N, C, T] over whole recordings (one window)."""
    sensor = series.transpose(0, 2, 1)  # [N, T, C]
    mask = np.ones(sensor.shape[:2], bool)
    return np.asarray(minirocket.features(sensor, mask, plan, biases, sensor.shape[1]))[:, 0]  # [N, F]


@pytest.mark.parametrize("channels, examples, steps", [(1, 4, 120), (3, 6, 80), (6, 5, 50)])
def test_the_features_are_aeons_on_the_same_input_and_parameters(channels, examples, steps):
    series = np.random.default_rng(channels).normal(size=(examples, channels, steps)).astype(np.float32)
    expected, plan, biases = _aeon(series)
    assert (plan.dilations, plan.features_per_dilation) == minirocket.dilations(steps, 10_000, 32)
    np.testing.assert_array_equal(plan.channels, minirocket.channel_combinations(channels, len(plan.channels), 0))
    differences = np.abs(_ours(series, plan, biases) - expected)
    # A convolution output equal to its bias to float rounding may fall either side: at most one position of one
    # feature in ten thousand.
    assert np.mean(differences > 1e-6) < 1e-4 and differences.max() <= 1 / (steps - 8 * max(plan.dilations))


def test_from_one_training_example_the_fitted_biases_are_aeons():
    """With one example nothing is drawn: harjax's fit reads the same quantiles of the same outputs."""
    series = np.random.default_rng(1).normal(size=(1, 1, 90)).astype(np.float32)
    expected, plan, biases = _aeon(series)
    fitted = minirocket.fit_biases(series.transpose(0, 2, 1), np.ones((1, 90), bool), plan, seed=7)
    np.testing.assert_allclose(fitted, biases, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_ours(series, plan, fitted), expected, atol=1e-6)


def test_a_recording_gives_the_same_features_whatever_it_is_padded_to():
    """Padded steps are zero in the convolution and never counted, in the whole recording and in each window.

    So the features of a short recording do not depend on what follows it.
    """
    rng = np.random.default_rng(2)
    plan = minirocket.make_plan(100, 2, 840, 32, seed=0)
    sensor = rng.normal(size=(1, 100, 2)).astype(np.float32)
    biases = minirocket.fit_biases(sensor, np.ones((1, 100), bool), plan, seed=0)
    recorded = np.arange(100) < 60
    padded = np.where(recorded[:, None], sensor[0], rng.normal(size=(100, 2)) * 100)  # garbage after step 60
    long = minirocket.features(padded[None], recorded[None], plan, biases, 100)
    short = minirocket.features(sensor[:, :60], np.ones((1, 60), bool), plan, biases, 60)
    np.testing.assert_allclose(np.asarray(long), np.asarray(short), atol=1e-6)
    windows = np.asarray(minirocket.features(padded[None], recorded[None], plan, biases, 20))  # [1, 5, F]
    assert np.all(windows[0, 3:] == 0.0) and windows[0, :3].max() > 0.0


def test_read_to_its_length_a_recording_shows_its_duration_but_not_its_batch_padding():
    """pad_to_length: what follows the last recorded step reads as zeros up to the reference length.

    Whatever is stored there; so two recordings that differ only in duration differ in their features.
    """
    rng = np.random.default_rng(3)
    plan = minirocket.make_plan(100, 1, 840, 32, seed=0)
    sensor = rng.normal(size=(1, 100, 1)).astype(np.float32)
    biases = minirocket.fit_biases(sensor, np.ones((1, 100), bool), plan, seed=0)

    def read(values, recorded, pad_to_length=True):
        return minirocket.features(*minirocket.reading(values, recorded[None], 100, pad_to_length), plan, biases, 100)

    recorded = np.arange(100) < 60
    garbage = np.where(recorded[:, None], sensor[0], rng.normal(size=(100, 1)) * 100)[None]
    zeros = np.where(recorded[:, None], sensor[0], 0.0)[None]
    np.testing.assert_array_equal(np.asarray(read(garbage, recorded)), np.asarray(read(zeros, recorded)))
    assert np.abs(np.asarray(read(zeros, recorded)) - np.asarray(read(zeros, recorded, False))).max() > 0
    assert np.abs(np.asarray(read(zeros, np.arange(100) < 40)) - np.asarray(read(zeros, recorded))).max() > 0
    gap = recorded & ~((np.arange(100) >= 20) & (np.arange(100) < 25))  # a gap inside stays unread
    _, positions = minirocket.reading(zeros, gap[None], 100, True)
    assert not np.asarray(positions)[0, 20:25].any() and np.asarray(positions)[0, 60:].all()


def test_a_feature_constant_over_the_training_windows_is_left_unscaled():
    """Divided by a floor std, a value such a feature takes only at prediction would decide the prediction alone."""
    rng = np.random.default_rng(4)
    encoder = minirocket.MiniRocketEncoder(length=120, num_features=168, stride=8, parent=None)
    sensor = rng.normal(size=(6, 40, 1)).astype(np.float32)  # too short for the largest dilations' valid outputs
    fitted = minirocket.fit(sensor, np.ones((6, 40), bool), encoder, seed=0)
    constant = fitted["std"] == 1.0
    assert constant.any() and np.all(fitted["std"][~constant] < 1.0) and np.all(fitted["std"] > 0)


@pytest.mark.parametrize("examples, features", [(40, 300), (300, 40)])
def test_the_ridge_head_is_scikit_learns_ridge_classifier_cv(examples, features):
    """The penalty aeon's MiniRocketClassifier would choose by leave-one-out, and its predictions.

    Both sides of the fit (more features than examples, and fewer) against RidgeClassifierCV on the same features;
    harjax's scores are the ridge's scaled by one calibration factor, so their argmax is the same.
    """
    from sklearn.linear_model import RidgeClassifierCV

    rng = np.random.default_rng(examples)
    labels = rng.integers(0, 4, examples)
    x = rng.normal(size=(examples, features))
    x[np.arange(examples), labels] += 1.5
    reference = RidgeClassifierCV(alphas=ridge.ALPHAS).fit(x, labels)
    fitted = ridge.fit(x, labels, 4)
    assert fitted.alpha == pytest.approx(reference.alpha_)
    scores, expected = x @ fitted.kernel + fitted.bias, reference.decision_function(x)
    np.testing.assert_allclose(scores / scores.std(), expected / expected.std(), atol=1e-5)
    unseen = rng.normal(size=(50, features))
    np.testing.assert_array_equal((unseen @ fitted.kernel + fitted.bias).argmax(1), reference.predict(unseen))
    assert 0.25 < fitted.loo_accuracy <= 1.0


def test_the_ridges_scores_become_calibrated_probabilities():
    """The scale is chosen by the leave-one-out predictions' log loss: sharper where they are right."""
    labels = np.arange(200) % 4
    scores = ridge.targets(labels, 4) * 0.2
    assert ridge.calibration_scale(scores, labels) >= 100  # always right: sharp (its log loss is 0 to rounding)
    noisy = scores + np.random.default_rng(0).normal(scale=0.4, size=scores.shape)
    assert ridge.SCALES[0] < ridge.calibration_scale(noisy, labels) < ridge.SCALES[-1]


def test_a_ridge_fit_larger_than_the_free_memory_is_refused_naming_the_sizes():
    with pytest.raises(
        errors.ConfigError,
        match=r"config.model.head='ridge': its fit on 10000000 training examples of "
        r"10000 features needs .* GiB of host memory and .* GiB is free; lower config.model.minirocket",
    ):
        ridge.check_memory(10_000_000, 10_000)


@pytest.mark.parametrize(
    "modalities, encoder", [("both", "minirocket"), ("sensor", "inception")], ids=["with video", "learned encoder"]
)
def test_the_ridge_head_without_minirocket_features_of_the_sensors_alone_is_refused(modalities, encoder):
    from configs import sensor_minirocket

    config = small_config(sensor_minirocket)
    config.model.update(modalities=modalities, encoder=encoder)
    with pytest.raises(errors.ConfigError, match=r"config.model.head='ridge' reads the MiniRocket features of the"):
        har_model.build_model(config, 6)
