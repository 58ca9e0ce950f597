"""The global-batch InfoNCE computed per device equals the single-device loss on the concatenated batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from harjax import errors
from harjax.training import losses, parallel
from tests.conftest import NUM_DEVICES

LOCAL, IN_DIM, EMBED_DIM = 4, 6, 5
GLOBAL = LOCAL * NUM_DEVICES


@pytest.fixture
def problem():
    """Two linear 'encoders' (the parameters) and a global batch of paired inputs."""
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "video": jax.random.normal(keys[0], (IN_DIM, EMBED_DIM)),
        "sensor": jax.random.normal(keys[1], (IN_DIM, EMBED_DIM)),
        "log_scale": jnp.asarray(np.log(1 / 0.1), jnp.float32),
    }
    video_in = jax.random.normal(keys[2], (GLOBAL, IN_DIM))
    sensor_in = jax.random.normal(keys[3], (GLOBAL, IN_DIM))
    return params, video_in, sensor_in


def _embed(params, video_in, sensor_in):
    return video_in @ params["video"], sensor_in @ params["sensor"], jnp.exp(params["log_scale"])


def _single_device_loss(params, video_in, sensor_in, weights=None):
    return losses.info_nce(*_embed(params, video_in, sensor_in), weights=weights)


def _reference_loss(params, video_in, sensor_in):
    """The textbook symmetric InfoNCE, written independently of harjax."""
    video, sensor, scale = _embed(params, video_in, sensor_in)
    video = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
    sensor = sensor / jnp.linalg.norm(sensor, axis=-1, keepdims=True)
    logits = scale * video @ sensor.T
    diagonal = jnp.arange(len(logits))
    v2s = -jax.nn.log_softmax(logits, axis=1)[diagonal, diagonal]
    s2v = -jax.nn.log_softmax(logits, axis=0)[diagonal, diagonal]
    return 0.5 * (v2s.mean() + s2v.mean())


def test_single_device_matches_textbook(problem):
    np.testing.assert_allclose(_single_device_loss(*problem), _reference_loss(*problem), rtol=1e-6)


def test_pmap_loss_and_gradients_match_single_device(problem):
    params, video_in, sensor_in = problem

    def per_device(params, video_in, sensor_in):
        def loss_fn(params):
            return losses.info_nce(*_embed(params, video_in, sensor_in), axis_name=parallel.DATA_AXIS)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return (jax.lax.pmean(loss, parallel.DATA_AXIS), jax.lax.pmean(grads, parallel.DATA_AXIS))

    replicated_params = jax.tree.map(lambda p: jnp.broadcast_to(p, (NUM_DEVICES, *p.shape)), params)
    shard = lambda x: x.reshape(NUM_DEVICES, LOCAL, -1)  # noqa: E731  [B, D] -> [devices, b, D]
    loss, grads = jax.pmap(per_device, axis_name=parallel.DATA_AXIS)(
        replicated_params, shard(video_in), shard(sensor_in)
    )
    expected_loss, expected_grads = jax.value_and_grad(_single_device_loss)(params, video_in, sensor_in)
    np.testing.assert_allclose(loss, np.full(NUM_DEVICES, expected_loss), rtol=1e-6)
    for name in params:
        np.testing.assert_allclose(
            grads[name], np.broadcast_to(expected_grads[name], grads[name].shape), rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("padded_rows", [0, 5])
def test_shard_map_loss_and_gradients_match_single_device(problem, padded_rows):
    params, video_in, sensor_in = problem
    mesh = parallel.make_mesh()
    weights = (jnp.arange(GLOBAL) < GLOBAL - padded_rows).astype(jnp.float32)

    @jax.jit
    def sharded_loss(params, video_in, sensor_in, weights):
        return losses.global_info_nce(mesh, parallel.DATA_AXIS, *_embed(params, video_in, sensor_in), weights)

    sharding = parallel.batch_sharded(mesh)
    inputs = [jax.device_put(x, sharding) for x in (video_in, sensor_in, weights)]
    loss, grads = jax.value_and_grad(sharded_loss)(params, *inputs)
    valid = slice(0, GLOBAL - padded_rows)  # padded rows are neither anchors nor negatives
    expected_loss, expected_grads = jax.value_and_grad(_single_device_loss)(params, video_in[valid], sensor_in[valid])
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    for name in params:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_gathered_negatives_matter(problem):
    """Guards the test above: per-device losses with local negatives only differ from the global loss."""
    params, video_in, sensor_in = problem
    local_only = np.mean(
        [
            _single_device_loss(params, video_in[i : i + LOCAL], sensor_in[i : i + LOCAL])
            for i in range(0, GLOBAL, LOCAL)
        ]
    )
    assert abs(local_only - _single_device_loss(params, video_in, sensor_in)) > 1e-2


def test_cross_entropy_ignores_zero_weight_rows():
    logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [9.0, -9.0]])
    labels = jnp.array([0, 1, 1])
    weighted = losses.cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(weighted, losses.cross_entropy(logits[:2], labels[:2]), rtol=1e-6)


def test_smoothed_cross_entropy_is_the_mix_of_the_label_and_uniform_targets():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    labels = jnp.asarray([0, 3, 1, 1, 2])
    log_p = jax.nn.log_softmax(logits)
    plain = -log_p[jnp.arange(5), labels]
    uniform = -log_p.mean(axis=-1)
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels, smoothing=0.2), (0.8 * plain + 0.2 * uniform).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), plain.mean(), rtol=1e-6)


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.1"])
def test_a_label_smoothing_outside_0_to_1_is_refused_naming_the_flag(value):
    with pytest.raises(errors.ConfigError, match=r"config.loss.label_smoothing must be in \[0, 1\)"):
        losses.label_smoothing(ml_collections.ConfigDict({"label_smoothing": value}))
    assert losses.label_smoothing(ml_collections.ConfigDict({})) == 0.0  # a config saved before the setting
