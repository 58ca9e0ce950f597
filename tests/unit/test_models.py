"""Model behaviour users rely on: masking, the keyless attention equations, every switch, padding invariance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import full, late_fusion, sensor_only, video_only
from harjax import errors
from harjax.data import batch as batch_lib
from harjax.models import har_model, inception_encoder, keyless_attention, sensor_encoder
from tests.conftest import ALL_CONFIGS, compiled, config_id, small_config


def _batch(batch_size=4, steps=32, channels=12, video_dim=32, lengths=(32, 20, 9, 3), frames=None, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.arange(steps)[None] < np.asarray(lengths)[:, None]
    sensor = np.where(mask[..., None], rng.normal(size=(batch_size, steps, channels)), 0).astype(np.float32)
    video_shape = (batch_size, video_dim) if frames is None else (batch_size, frames, video_dim)
    return {
        batch_lib.SENSOR: sensor,
        batch_lib.SENSOR_MASK: mask,
        batch_lib.VIDEO: rng.normal(size=video_shape).astype(np.float32),
        batch_lib.LABEL: np.zeros(batch_size, np.int32),
    }


def test_segment_masks_partition_recorded_steps_into_contiguous_segments():
    mask = jnp.array([[True] * 10 + [False] * 6, [True] * 3 + [False] * 13, [False] * 16])
    segments = np.asarray(keyless_attention.segment_masks(mask, 4))  # [B, K, n]
    np.testing.assert_array_equal(segments[0].sum(axis=0), np.asarray(mask[0]))  # each recorded step in one segment
    assert segments[0].sum(axis=1).tolist() == [3, 2, 3, 2]  # near-equal shares of the 10 recorded steps
    for k in range(4):  # contiguous and ordered
        steps = np.flatnonzero(segments[0, k])
        assert steps.tolist() == list(range(steps[0], steps[-1] + 1))
    # 3 steps cannot fill 4 segments: they share them, in order, every segment reading the recording only
    assert [np.flatnonzero(segment).tolist() for segment in segments[1]] == [[0], [1], [2], [2]]
    assert not segments[2].any()  # nothing recorded: nothing to read


def test_keyless_attention_matches_equations_and_ignores_padding():
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.normal(size=(2, 7)), jnp.float32)
    sensor = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
    mask = jnp.array([[True, True, True, False, False], [True] * 5])
    init, apply = compiled(keyless_attention.KeylessAttention())
    params = init(jax.random.key(0), video, sensor, keyless_attention.segment_masks(mask, 1))
    pooled, alpha = apply(params, video, sensor, keyless_attention.segment_masks(mask, 1))

    w = params["params"]["w"]
    for b, length in enumerate([3, 5]):
        scores = np.array([video[b] @ w @ sensor[b, i] for i in range(length)]) / np.sqrt(3)
        expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(alpha[b, 0, :length], expected, rtol=1e-5)
        np.testing.assert_allclose(pooled[b, 0], expected @ np.asarray(sensor[b, :length]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(alpha[0, 0, 3:], 0.0)  # padding never receives weight

    # Whatever the padded steps hold, the output is the same.
    noisy = sensor.at[0, 3:].set(1e4)
    np.testing.assert_allclose(
        apply(params, video, noisy, keyless_attention.segment_masks(mask, 1))[0], pooled, rtol=1e-6
    )


def test_a_recording_shorter_than_its_segments_is_pooled_in_each_and_an_empty_one_without_nans():
    video, sensor = jnp.ones((2, 4)), jnp.arange(36.0).reshape(2, 6, 3)
    masks = keyless_attention.segment_masks(jnp.array([[True, True] + [False] * 4, [False] * 6]), 4)
    init, apply = compiled(keyless_attention.KeylessAttention())
    pooled, alpha = apply(init(jax.random.key(0), video, sensor, masks), video, sensor, masks)
    assert np.isfinite(pooled).all() and np.isfinite(alpha).all()
    np.testing.assert_allclose(alpha.sum(-1), [[1.0] * 4, [0.0] * 4], rtol=1e-6)
    np.testing.assert_allclose(pooled[0], sensor[0, [0, 0, 1, 1]], rtol=1e-6)  # two steps shared by four segments


@pytest.mark.parametrize("config_module", ALL_CONFIGS, ids=config_id)
@pytest.mark.parametrize("frames", [None, 3])
def test_every_config_builds_and_predicts(config_module, frames):
    config = small_config(config_module)
    har_model.resolve_reference_length(config)  # MiniRocket's dilations are chosen for the training length
    model = har_model.build_model(config, num_classes=6)
    batch = _batch(frames=frames)
    init, apply = compiled(model)
    variables = init(jax.random.key(0), batch, train=False)
    output = apply(variables, batch, train=False)
    assert output.logits.shape == (4, 6) and output.logits.dtype == jnp.float32
    assert np.isfinite(output.logits).all()
    has_contrastive = config.loss.contrastive_weight > 0
    assert (output.video_embedding is not None) == has_contrastive
    assert (output.alpha is not None) == (config.model.modalities == "both" and config.model.fusion == "attention")
    if config.model.modalities == "sensor":  # video-free: the model never reads 'video'
        del batch[batch_lib.VIDEO]
        np.testing.assert_allclose(apply(variables, batch, train=False).logits, output.logits, rtol=1e-6)


@pytest.mark.parametrize("config_module", [full, late_fusion, sensor_only], ids=config_id)
@pytest.mark.parametrize("extra_padding", [1, 32, 33])
def test_padding_length_does_not_change_predictions(config_module, extra_padding):
    config = small_config(config_module)
    model = har_model.build_model(config, num_classes=6)
    short = _batch(steps=32)
    long = {
        **short,
        batch_lib.SENSOR: np.pad(short[batch_lib.SENSOR], ((0, 0), (0, extra_padding), (0, 0))),
        batch_lib.SENSOR_MASK: np.pad(short[batch_lib.SENSOR_MASK], ((0, 0), (0, extra_padding))),
    }
    init, apply = compiled(model)
    variables = init(jax.random.key(0), short, train=False)
    np.testing.assert_allclose(
        apply(variables, long, train=False).logits,
        apply(variables, short, train=False).logits,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("stride,norm", [(1, "layer"), (2, "layer"), (2, "batch")])
def test_the_inception_encoder_sees_whole_motions_and_ignores_padding(stride, norm):
    config = small_config(sensor_only)
    config.model.encoder = "inception"
    config.model.inception.update(depth=3, filters=8, bottleneck=8, stride=stride, norm=norm)
    model = har_model.build_model(config, num_classes=6)
    short = _batch(steps=32)
    long = {
        **short,
        batch_lib.SENSOR: np.pad(short[batch_lib.SENSOR], ((0, 0), (0, 9), (0, 0))),
        batch_lib.SENSOR_MASK: np.pad(short[batch_lib.SENSOR_MASK], ((0, 0), (0, 9))),
    }
    init, apply = compiled(model)
    variables = init(jax.random.key(0), short, train=False)
    np.testing.assert_allclose(
        apply(variables, long, train=False).logits, apply(variables, short, train=False).logits, atol=1e-5
    )
    # The first output step depends on inputs 3 x 19 steps away (kernel 39 per block): a change there moves it.
    encoder = inception_encoder.InceptionEncoder(**dict(model.inception))
    sensor, mask = jnp.asarray(short[batch_lib.SENSOR][:1]), jnp.ones((1, 32), bool)
    params = jax.jit(encoder.init)(jax.random.key(1), sensor, mask)
    moved = jax.jit(encoder.apply)(params, sensor.at[0, 31].add(5.0), mask)[0]
    assert not np.allclose(moved[0, 0], jax.jit(encoder.apply)(params, sensor, mask)[0][0, 0])
    assert har_model.encoder_stride(config) == stride
    if norm == "batch":  # training: the batch statistics skip padding, so they and the outputs do not move
        train = jax.jit(functools.partial(encoder.apply, train=True, mutable=["batch_stats"]))
        outputs = [
            train(params, jnp.asarray(b[batch_lib.SENSOR]), jnp.asarray(b[batch_lib.SENSOR_MASK]))
            for b in (short, long)
        ]
        (short_out, _), short_stats = outputs[0]
        (long_out, _), long_stats = outputs[1]
        np.testing.assert_allclose(long_out[:, : short_out.shape[1]], short_out, atol=1e-5)
        jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), long_stats, short_stats)
        assert not np.allclose(
            short_out,
            jax.jit(encoder.apply)(
                params, jnp.asarray(short[batch_lib.SENSOR]), jnp.asarray(short[batch_lib.SENSOR_MASK])
            )[0],
        )


@pytest.mark.parametrize(
    "stride,steps,kernel_size,dtype",
    [
        (1, 16, 5, jnp.float32),
        (2, 16, 5, jnp.float32),
        (2, 15, 5, jnp.float32),
        (3, 10, 5, jnp.float32),
        (2, 15, 4, jnp.float32),  # an even kernel pads one step more on the right
        (2, 15, 5, jnp.bfloat16),
    ],
)
def test_conv_norm_gelu_has_the_values_and_gradients_of_autodiff(stride, steps, kernel_size, dtype):
    """The encoder block's hand-written backward against JAX's float32 gradient of the same composition."""
    rng = np.random.default_rng(stride + steps + kernel_size)
    x, kernel = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in [(3, steps, 4), (kernel_size, 4, 6)])
    conv_bias, scale, bias = (jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(3))
    cotangent = jnp.asarray(rng.normal(size=(3, -(-steps // stride), 6)), jnp.float32)

    def reference(x, kernel, conv_bias, scale, bias):
        z = sensor_encoder.conv1d(x, kernel, stride) + conv_bias
        normalized = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-6)
        return jax.nn.gelu(normalized * scale + bias)

    def fused(x, kernel, conv_bias, scale, bias):
        return sensor_encoder.conv_norm_gelu(x, kernel, conv_bias, scale, bias, stride, dtype).astype(jnp.float32)

    # bfloat16 keeps 8 bits of mantissa: agreement to a few percent of each array's scale.
    tolerance = 1e-5 if dtype == jnp.float32 else 4e-2
    arguments = (x, kernel, conv_bias, scale, bias)
    expected, expected_vjp = jax.vjp(reference, *arguments)
    value, fused_vjp = jax.vjp(jax.jit(fused), *arguments)
    np.testing.assert_allclose(value, expected, rtol=tolerance, atol=tolerance)
    for got, want in zip(fused_vjp(cotangent), expected_vjp(cotangent), strict=True):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=10 * tolerance, atol=tolerance * float(jnp.abs(want).max()))


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    config = small_config()
    config.model.dtype = "bfloat16"
    model = har_model.build_model(config, num_classes=6)
    init, apply = compiled(model)
    variables = init(jax.random.key(0), _batch(), train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    output = apply(variables, _batch(), train=False)
    assert output.logits.dtype == jnp.float32 and np.isfinite(output.logits).all()
    grads = jax.jit(
        jax.grad(
            lambda params: model.apply(
                {**variables, "params": params},
                _batch(),
                train=True,
                rngs={"dropout": jax.random.key(1)},
                mutable=["batch_stats"],
            )[0].logits.sum()
        )
    )(variables["params"])
    assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_video_standardisation_makes_per_dimension_scale_irrelevant():
    """A few huge dimensions (as in LLM hidden states) must not swamp the rest.

    The model standardises each dimension, so rescaling and shifting dimensions leaves training-mode predictions
    unchanged.
    """
    config = small_config(video_only)
    config.model.dropout = 0.0
    model = har_model.build_model(config, num_classes=6)
    batch = _batch(batch_size=8, lengths=(32,) * 8)
    init, apply = compiled(model)
    variables = init(jax.random.key(0), batch, train=False)
    distorted = {**batch, batch_lib.VIDEO: batch[batch_lib.VIDEO] * np.geomspace(1, 1e3, 32) + 500.0}

    def logits(inputs):
        return apply(variables, inputs, train=True, mutable="batch_stats")[0].logits

    np.testing.assert_allclose(logits(distorted), logits(batch), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "override, flag",
    [
        (dict(modalities="audio"), "config.model.modalities"),
        (dict(fusion="sum"), "config.model.fusion"),
        (dict(encoder_strides=(1,)), "config.model.encoder_strides"),
        (dict(dtype="float16"), "config.model.dtype"),
        (dict(encoder="lstm"), "config.model.encoder"),
    ],
)
def test_bad_model_config_names_the_flag(override, flag):
    config = small_config()
    config.model.update(override)
    with pytest.raises(ValueError, match=flag.replace(".", r"\.")):
        har_model.build_model(config, num_classes=6)


def test_contrastive_weight_with_one_modality_is_rejected():
    config = small_config(video_only)
    config.loss.contrastive_weight = 0.5
    with pytest.raises(ValueError, match=r"config\.loss\.contrastive_weight"):
        har_model.build_model(config, num_classes=6)


def test_both_encoder_backwards_share_parameters_values_and_gradients():
    """'autodiff' (the reference) and 'hand_written' are one function with one parameter layout.

    A checkpoint of either restores into the other, and their gradients agree.
    """
    batch = _batch()
    models = {}
    for setting in ("autodiff", "hand_written"):
        config = small_config()
        config.model.encoder_backward = setting
        models[setting] = har_model.build_model(config, num_classes=6)
    variables = compiled(models["autodiff"])[0](jax.random.key(0), batch, train=False)
    other = compiled(models["hand_written"])[0](jax.random.key(0), batch, train=False)
    assert jax.tree.structure(other) == jax.tree.structure(variables)

    def loss(model, params):
        output = model.apply(
            {**variables, "params": params},
            batch,
            train=True,
            rngs={"dropout": jax.random.key(1)},
            mutable=["batch_stats"],
        )[0]
        return output.logits.sum()

    grads = {
        name: jax.jit(jax.grad(functools.partial(loss, model)))(variables["params"]) for name, model in models.items()
    }
    np.testing.assert_allclose(
        compiled(models["hand_written"])[1](variables, batch, train=False).logits,
        compiled(models["autodiff"])[1](variables, batch, train=False).logits,
        rtol=1e-5,
        atol=1e-6,
    )
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
        grads["hand_written"],
        grads["autodiff"],
    )
    config = small_config()
    config.model.encoder_backward = "fast"
    with pytest.raises(ValueError, match=r"config\.model\.encoder_backward must be one of"):
        har_model.build_model(config, num_classes=6)


def test_recordings_shorter_than_the_segments_are_scored_and_counted_a_training_split_of_them_refused(tmp_path):
    """A short recording shares its encoder steps among the segments; only a split made of them cannot train.

    Refused before training, naming the setting and the sizes; otherwise counted per split in config.json.
    """
    from harjax.training import loop

    config = small_config()
    config.model.encoder_strides = (4, 4)  # 16 input steps per encoder step: 32-step recordings get 2 < K = 4
    with pytest.raises(
        errors.ConfigError,
        match=r"config.model.encoder_strides=\(4, 4\) \(total stride 16\) with config.model.num_segments=4 needs "
        r"recordings of at least 64 steps \(a step per segment\), but the training split's typical \(median\) "
        r"recording has \d+; lower the stride or the segments",
    ):
        loop.train_and_evaluate(config, str(tmp_path / "workdir"))
    config.model.update(encoder="inception")
    config.model.inception.stride = 8
    lengths = np.array([2, 9, 31, 32, 40])  # encoder steps 1, 2, 4, 4, 5
    assert har_model.count_short_recordings(config, lengths, "eval") == 2
    assert har_model.count_short_recordings(config, lengths, "train") == 2  # the typical one reads 4 steps
    config.model.encoder = "cnn"
    config.model.encoder_strides = (1, 0)
    with pytest.raises(errors.ConfigError, match=r"config.model.encoder_strides must be positive, got \(1, 0\)"):
        loop.train_and_evaluate(config, str(tmp_path / "zero"))
