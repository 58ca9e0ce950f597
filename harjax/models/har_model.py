"""The full model and its baselines/ablations, all switches on one module (config.model)."""

from __future__ import annotations

import logging
import math
import typing
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from harjax import errors
from harjax.data import batch as batch_lib
from harjax.models import fusion, inception_encoder, keyless_attention, minirocket_encoder, ridge, sensor_encoder

Modality = Literal["both", "video", "sensor"]
Fusion = Literal["attention", "concat", "late"]
Encoder = Literal["cnn", "inception", "minirocket"]
Head = Literal["mlp", "ridge"]
MODALITIES: tuple[Modality, ...] = typing.get_args(Modality)
FUSIONS: tuple[Fusion, ...] = typing.get_args(Fusion)
ENCODERS: tuple[Encoder, ...] = typing.get_args(Encoder)
HEADS: tuple[Head, ...] = typing.get_args(Head)
INCEPTION_KEYS = ("depth", "filters", "kernel_sizes", "bottleneck", "residual_every", "stride", "norm")
MINIROCKET_KEYS = ("length", "num_features", "max_dilations", "seed", "stride", "dim", "pad_to_length")
MINIROCKET_SCOPE = "MiniRocketEncoder_0"  # its fitted state: batch_stats[MINIROCKET_SCOPE]
RIDGE_SCOPE = "ridge_classifier"  # the ridge head's fitted state: batch_stats[RIDGE_SCOPE]
LOGIT_SCALE = "logit_scale"  # log(1 / tau); the optimizer keeps it at or below log(max_logit_scale)


class ModelOutput(struct.PyTreeNode):
    logits: jax.Array  # [B, num_classes] float32
    video_embedding: jax.Array | None = None  # [B, projection_dim], for the contrastive term
    sensor_embedding: jax.Array | None = None  # [B, projection_dim]
    logit_scale: jax.Array | None = None  # [] = 1 / temperature
    alpha: jax.Array | None = None  # [B, K, n] keyless attention weights
    member_logits: jax.Array | None = None  # [B, N, num_classes]: an ensemble's members' own (models/ensemble.py)
    member_alpha: jax.Array | None = None  # [B, N, K, n]
    family_logits: jax.Array | None = None  # [B, 2, num_classes]: with a ridge beside the trained part, each's own


class _Video(NamedTuple):
    clip: jax.Array  # [B, d_v] standardised (the mean over frames when given per frame)
    frames: jax.Array | None  # [B, F, d_v] standardised, or None


class _Sensor(NamedTuple):
    sequence: jax.Array  # S [B, n, d_s]
    mask: jax.Array  # [B, n] recorded steps
    segments: jax.Array  # [B, K, n] each segment's recorded steps


class JointTokens(nn.Module):
    """The joint tokens Dense([v || a_k]) for k = 1..K, with v's share computed once per example, not K times.

    [v || a_k] W + b = (v W_v + b) + a_k W_a: one [d_v, D] product per example instead of K (d_v is 4096 for
    Video-LLaVA, d_s 128). Parameters are a Dense's (kernel [d_v + d_s, D], bias [D]), so checkpoints and the
    PyTorch reference's Linear (which splits its weight the same way) map one to one.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, pooled: jax.Array) -> jax.Array:
        """video [B, d_v], pooled [B, K, d_s] -> tokens [B, K, features]."""
        video_dim = video.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (video_dim + pooled.shape[-1], self.features)
        ).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        video_share = jnp.dot(video.astype(self.dtype), kernel[:video_dim]) + bias  # [B, D]
        return video_share[:, None, :] + jnp.dot(pooled.astype(self.dtype), kernel[video_dim:])


class HARModel(nn.Module):
    """Sensor CNN + keyless cross-modal attention per segment + Transformer over joint tokens + MLP.

    modalities: 'both' | 'video' (video-only baseline) | 'sensor' (sensor-only baseline).
    fusion: 'attention' (the paper) | 'concat' (mean pooling instead of attention) | 'late' (average of
    unimodal logits). Tokens fed to the classifier:
      both, attention/concat: K joint tokens [v || a_k] (+ one token per video frame when given per frame)
      video:  the clip token (or one per frame);   sensor: K pooled segment tokens a_k.
    head: 'mlp' (the classifier over tokens above, trained) | 'ridge' (sensor only, MiniRocket encoder: a ridge
    classifier on the standardised features of the whole recording, fitted before step 0: harjax/models/ridge.py).
    ridge_weight w > 0 (sensor only, a trained encoder and head): that ridge beside them, a member of another
    family; evaluation, serving and exports predict (1 - w) p_trained + w p_ridge, training trains the trained
    part alone.
    Submodules carry explicit names (those Flax gave them when this was one method), so parameter paths, and
    with them checkpoints and bundles, stay stable however the forward pass is arranged.
    """

    num_classes: int
    modalities: Modality
    fusion: Fusion
    num_segments: int
    encoder_channels: Sequence[int]
    encoder_strides: Sequence[int]
    encoder_kernel_size: int
    model_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    head_dim: int
    dropout: float
    use_transformer: bool
    projection_dim: int  # 0: no contrastive heads
    temperature: float
    learnable_temperature: bool
    dtype: Any = jnp.float32
    hand_written_encoder_backward: bool = True
    encoder: Encoder = "cnn"
    inception: tuple[tuple[str, Any], ...] = ()  # InceptionEncoder's fields (config.model.inception), as pairs
    minirocket: tuple[tuple[str, Any], ...] = ()  # MiniRocketEncoder's fields (config.model.minirocket), as pairs
    head: Head = "mlp"
    ridge_weight: float = 0.0

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], train: bool) -> ModelOutput:
        if self.head == "ridge":
            return ModelOutput(logits=self._ridge_logits(batch))
        output = self._trained(batch, train)
        if not self.ridge_weight or train:
            return output
        families = jnp.stack([output.logits.astype(jnp.float32), self._ridge_logits(batch)], axis=1)  # [B, 2, C]
        weights = jnp.array([1 - self.ridge_weight, self.ridge_weight])[:, None]  # [2, 1]
        probabilities = jnp.sum(weights * jax.nn.softmax(families), axis=1)
        return output.replace(logits=jnp.log(probabilities), family_logits=families)

    def _trained(self, batch: dict[str, jax.Array], train: bool) -> ModelOutput:
        video = self._standardised_video(batch, train) if self.modalities in ("both", "video") else None
        sensor = self._encoded_sensor(batch, train) if self.modalities in ("both", "sensor") else None
        alpha = None
        if self.modalities == "video":
            logits = self._video_logits(video, train, "classifier")
        elif self.modalities == "sensor":  # named as before a sensor-only model ignored config.model.fusion
            logits = self._sensor_logits(sensor, train, "sensor_classifier" if self.fusion == "late" else "classifier")
        elif self.fusion == "late":
            logits = 0.5 * (
                self._sensor_logits(sensor, train, "sensor_classifier")
                + self._video_logits(video, train, "video_classifier")
            )
        else:
            logits, alpha = self._joint_logits(video, sensor, train)
        if not self.projection_dim:
            return ModelOutput(logits=logits, alpha=alpha)
        return self._with_contrastive_embeddings(ModelOutput(logits=logits, alpha=alpha), video, sensor)

    def _standardised_video(self, batch: dict[str, jax.Array], train: bool) -> _Video:
        """v standardised per dimension, with a removed video as zeros, and its frames when given per frame.

        LLM hidden states have a few dimensions hundreds of times larger than the rest, which would otherwise
        dominate every projection. The two-pass variance stays exact where E[x^2] - E[x]^2 would cancel
        catastrophically on such dimensions.
        """
        video = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.99,
            use_bias=False,
            use_scale=False,
            use_fast_variance=False,
            name="video_standardise",
        )(batch[batch_lib.VIDEO].astype(jnp.float32))
        if batch_lib.VIDEO_PRESENT in batch:  # a removed video is the training mean: zeros once standardised
            present = batch[batch_lib.VIDEO_PRESENT].reshape(-1, *(1,) * (video.ndim - 1))  # [B, 1(, 1)]
            video = jnp.where(present, video, 0.0)
        if video.ndim == 3:  # per-frame embeddings [B, F, d_v]
            return _Video(clip=video.mean(axis=1), frames=video)
        return _Video(clip=video, frames=None)

    def _encoded_sensor(self, batch: dict[str, jax.Array], train: bool) -> _Sensor:
        sensor, mask = batch[batch_lib.SENSOR].astype(self.dtype), batch[batch_lib.SENSOR_MASK]
        if self.encoder == "inception":
            sequence, mask = inception_encoder.InceptionEncoder(
                **dict(self.inception), dtype=self.dtype, name="InceptionEncoder_0"
            )(sensor, mask, train)
        elif self.encoder == "minirocket":
            sequence, mask = self.minirocket_encoder()(sensor, mask)
        else:
            sequence, mask = sensor_encoder.SensorEncoder(
                self.encoder_channels,
                self.encoder_strides,
                self.encoder_kernel_size,
                self.dtype,
                self.hand_written_encoder_backward,
                name="SensorEncoder_0",
            )(sensor, mask)
        return _Sensor(sequence, mask, keyless_attention.segment_masks(mask, self.num_segments))  # segments [B, K, n]

    def minirocket_encoder(self) -> minirocket_encoder.MiniRocketEncoder:
        """The MiniRocket encoder of this model (its fitted state: fit_statistics)."""
        return minirocket_encoder.MiniRocketEncoder(**minirocket_fields(self), dtype=self.dtype, name=MINIROCKET_SCOPE)

    def _ridge_logits(self, batch: dict[str, jax.Array]) -> jax.Array:
        """The ridge classifier on the whole recording's standardised MiniRocket features."""
        features, _ = self.minirocket_encoder()(batch[batch_lib.SENSOR], batch[batch_lib.SENSOR_MASK])  # [B, 1, F]
        return ridge.RidgeClassifier(self.num_classes, name=RIDGE_SCOPE)(features[:, 0])

    def _classifier(self, name: str) -> fusion.TokenClassifier:
        return fusion.TokenClassifier(
            self.num_classes,
            self.num_layers,
            self.num_heads,
            self.mlp_dim,
            self.head_dim,
            self.dropout,
            self.use_transformer,
            self.dtype,
            name=name,
        )

    def _tokens(self, features: jax.Array, name: str) -> jax.Array:
        return nn.Dense(self.model_dim, dtype=self.dtype, name=name)(features.astype(self.dtype))

    def _video_tokens(self, video: _Video) -> tuple[jax.Array, jax.Array]:
        """One token per frame, or the clip's one: (tokens [B, F or 1, D], mask [B, F or 1])."""
        clip = video.frames if video.frames is not None else video.clip[:, None]  # [B, F or 1, d_v]
        return self._tokens(clip, "video_token"), jnp.ones(clip.shape[:2], bool)

    def _video_logits(self, video: _Video, train: bool, name: str) -> jax.Array:
        return self._classifier(name)(*self._video_tokens(video), train)

    def _sensor_logits(self, sensor: _Sensor, train: bool, name: str) -> jax.Array:
        """K mean-pooled segment tokens through a classifier of their own."""
        tokens = self._tokens(keyless_attention.masked_mean(sensor.sequence, sensor.segments), "sensor_token")
        return self._classifier(name)(tokens, sensor.segments.any(-1), train)

    def _joint_logits(self, video: _Video, sensor: _Sensor, train: bool) -> tuple[jax.Array, jax.Array | None]:
        """Joint tokens [v || a_k] of each segment through the classifier: (logits, alpha [B, K, n] or None).

        Segments are pooled by keyless attention (or by the mean: 'concat'); one token per frame joins them when the
        video comes per frame.
        """
        alpha = None
        if self.fusion == "attention":
            pooled, alpha = keyless_attention.KeylessAttention(self.dtype, name="KeylessAttention_0")(
                video.clip.astype(self.dtype), sensor.sequence, sensor.segments
            )
        else:
            pooled = keyless_attention.masked_mean(sensor.sequence, sensor.segments)
        tokens = JointTokens(self.model_dim, self.dtype, name="joint_token")(video.clip, pooled)  # [B, K, D]
        token_mask = sensor.segments.any(-1)  # [B, K]
        if video.frames is not None:
            frame_tokens, frame_mask = self._video_tokens(video)
            tokens = jnp.concatenate([tokens, frame_tokens], axis=1)  # [B, K + F, D]
            token_mask = jnp.concatenate([token_mask, frame_mask], axis=1)
        return self._classifier("classifier")(tokens, token_mask, train), alpha

    def _with_contrastive_embeddings(self, output: ModelOutput, video: _Video, sensor: _Sensor) -> ModelOutput:
        """The projections the InfoNCE compares, and its scale 1 / tau.

        The sensor side of the contrastive pair is the whole recording, not the video-attended pooling, which
        would leak v into its own positive.
        """
        sensor_summary = keyless_attention.masked_mean(sensor.sequence, sensor.mask[:, None])[:, 0]  # [B, d_s]
        if self.learnable_temperature:
            logit_scale = jnp.exp(self.param(LOGIT_SCALE, nn.initializers.constant(math.log(1 / self.temperature)), ()))
        else:
            logit_scale = jnp.asarray(1 / self.temperature, jnp.float32)
        return output.replace(
            video_embedding=nn.Dense(self.projection_dim, dtype=self.dtype, name="video_projection")(
                video.clip.astype(self.dtype)
            ),
            sensor_embedding=nn.Dense(self.projection_dim, dtype=self.dtype, name="sensor_projection")(sensor_summary),
            logit_scale=logit_scale,
        )


def uses_video(config: ml_collections.ConfigDict) -> bool:
    """Whether the model of `config` reads the video embedding."""
    return config.model.modalities in ("both", "video")


def uses_sensor(config: ml_collections.ConfigDict) -> bool:
    """Whether the model of `config` reads the sensor streams."""
    return config.model.modalities in ("both", "sensor")


def has_contrastive_heads(config: ml_collections.ConfigDict) -> bool:
    """Whether the model of `config` has the contrastive projections (the InfoNCE term is on)."""
    return config.loss.contrastive_weight > 0


def has_keyless_attention(config: ml_collections.ConfigDict) -> bool:
    """Whether the model of `config` pools sensor segments by keyless attention (and so has weights to show)."""
    return config.model.modalities == "both" and config.model.fusion == "attention"


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> HARModel:
    """The model a config describes; rejects combinations that have no meaning, naming the flag."""
    model = config.model
    if model.modalities not in MODALITIES:
        raise errors.ConfigError(f"config.model.modalities must be one of {MODALITIES}, got {model.modalities!r}")
    if model.fusion not in FUSIONS:
        raise errors.ConfigError(f"config.model.fusion must be one of {FUSIONS}, got {model.fusion!r}")
    contrastive = has_contrastive_heads(config)
    if contrastive and model.modalities != "both":
        raise errors.ConfigError(
            f"config.loss.contrastive_weight={config.loss.contrastive_weight} needs both modalities, "
            f"but config.model.modalities={model.modalities!r}; set the weight to 0"
        )
    if config.loss.temperature <= 0 or config.loss.temperature * config.loss.max_logit_scale < 1:
        raise errors.ConfigError(
            f"config.loss.temperature ({config.loss.temperature}) must be positive and at least "
            f"1 / config.loss.max_logit_scale ({config.loss.max_logit_scale})"
        )
    if len(model.encoder_channels) != len(model.encoder_strides):
        raise errors.ConfigError(
            "config.model.encoder_channels and config.model.encoder_strides must have the same length, "
            f"got {model.encoder_channels} and {model.encoder_strides}"
        )
    if min(model.encoder_strides, default=1) < 1:
        raise errors.ConfigError(f"config.model.encoder_strides must be positive, got {tuple(model.encoder_strides)}")
    if model.num_segments < 1 or model.model_dim % model.num_heads:
        raise errors.ConfigError(
            f"config.model.num_segments must be >= 1 (got {model.num_segments}) and "
            f"config.model.model_dim ({model.model_dim}) a multiple of num_heads ({model.num_heads})"
        )
    if model.dtype not in ("float32", "bfloat16"):
        raise errors.ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', got {model.dtype!r}")
    encoder = model.get("encoder", "cnn")  # bundles written before the choice existed hold the CNN
    if encoder not in ENCODERS:
        raise errors.ConfigError(f"config.model.encoder must be one of {ENCODERS}, got {encoder!r}")
    head = model.get("head", "mlp")  # bundles written before the choice existed hold the MLP
    if head not in HEADS:
        raise errors.ConfigError(f"config.model.head must be one of {HEADS}, got {head!r}")
    if head == "ridge" and (model.modalities != "sensor" or encoder != "minirocket"):
        raise errors.ConfigError(
            "config.model.head='ridge' reads the MiniRocket features of the sensors alone; it needs "
            f"config.model.modalities='sensor' and config.model.encoder='minirocket', got {model.modalities!r} and "
            f"{encoder!r}"
        )
    ridge_weight = model.get("ridge_weight", 0.0)  # bundles written before the choice existed have none
    if not 0 <= ridge_weight < 1 or (
        ridge_weight and (model.modalities != "sensor" or encoder == "minirocket" or head != "mlp")
    ):
        raise errors.ConfigError(
            "config.model.ridge_weight must be in [0, 1), and above 0 only beside a trained encoder and head of the "
            f"sensors alone; got {ridge_weight} with modalities {model.modalities!r}, encoder {encoder!r}, head "
            f"{head!r}"
        )
    inception = _inception_settings(model) if encoder == "inception" else ()
    minirocket = _minirocket_settings(model) if encoder == "minirocket" or ridge_weight else ()
    return HARModel(
        num_classes=num_classes,
        modalities=model.modalities,
        fusion=model.fusion,
        num_segments=model.num_segments,
        encoder_channels=tuple(model.encoder_channels),
        encoder_strides=tuple(model.encoder_strides),
        encoder_kernel_size=model.encoder_kernel_size,
        model_dim=model.model_dim,
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        mlp_dim=model.mlp_dim,
        head_dim=model.head_dim,
        dropout=model.dropout,
        use_transformer=model.use_transformer,
        projection_dim=model.projection_dim if contrastive else 0,
        temperature=config.loss.temperature,
        learnable_temperature=config.loss.learnable_temperature,
        dtype=jnp.dtype(model.dtype),
        hand_written_encoder_backward=sensor_encoder.hand_written_backward(
            model.encoder_backward, jax.default_backend()
        ),
        encoder=encoder,
        inception=inception,
        minirocket=minirocket,
        head=head,
        ridge_weight=float(ridge_weight),
    )


def _inception_settings(model: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    settings = dict(model.inception)
    unknown = sorted(set(settings) - set(INCEPTION_KEYS))
    if unknown:
        raise errors.ConfigError(f"config.model.inception has unknown keys {unknown}; it takes {INCEPTION_KEYS}")
    for key in ("depth", "filters", "stride"):
        if not isinstance(settings.get(key, 1), int) or settings.get(key, 1) < 1:
            raise errors.ConfigError(f"config.model.inception.{key} must be a positive integer, got {settings[key]!r}")
    if settings.get("norm", "layer") not in inception_encoder.NORMS:
        raise errors.ConfigError(
            f"config.model.inception.norm must be one of {inception_encoder.NORMS}, got {settings['norm']!r}"
        )
    if not settings.get("kernel_sizes") or min(settings["kernel_sizes"]) < 1:
        raise errors.ConfigError(
            f"config.model.inception.kernel_sizes must be positive lengths, got {settings.get('kernel_sizes')}"
        )
    return tuple((key, tuple(value) if isinstance(value, (list, tuple)) else value) for key, value in settings.items())


def _minirocket_settings(model: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    settings = dict(model.minirocket)
    unknown = sorted(set(settings) - set(MINIROCKET_KEYS))
    if unknown:
        raise errors.ConfigError(f"config.model.minirocket has unknown keys {unknown}; it takes {MINIROCKET_KEYS}")
    for key in ("num_features", "max_dilations", "stride", "dim"):
        if not isinstance(settings.get(key, 1), int) or settings.get(key, 1) < 1:
            raise errors.ConfigError(f"config.model.minirocket.{key} must be a positive integer, got {settings[key]!r}")
    if settings.get("length", 0) < minirocket_encoder.KERNEL_LENGTH:
        raise errors.ConfigError(
            f"config.model.minirocket.length must be at least {minirocket_encoder.KERNEL_LENGTH} steps (the kernel's "
            f"length; 0 means config.data.max_length), got {settings.get('length', 0)}"
        )
    return tuple(settings.items())


def resolve_reference_length(config: ml_collections.ConfigDict) -> None:
    """config.model.minirocket.length 0 becomes config.data.max_length, so config.json and bundles record it."""
    reads_minirocket = config.model.get("encoder", "cnn") == "minirocket" or config.model.get("ridge_weight", 0.0)
    if reads_minirocket and not config.model.minirocket.get("length", 0):
        config.model.minirocket.length = int(config.data.max_length)


def has_ridge(model: HARModel) -> bool:
    """Whether the model predicts with a ridge classifier: as its head, or as a member beside a trained head."""
    return model.head == "ridge" or model.ridge_weight > 0


def minirocket_fields(model: HARModel) -> dict[str, Any]:
    """The MiniRocket encoder's fields: config.model.minirocket, read over whole recordings for a ridge."""
    fields = dict(model.minirocket)
    return fields | dict(stride=0, dim=0) if has_ridge(model) else fields


def fits_statistics(model: HARModel) -> bool:
    """Whether the model has state fitted from the training split before step 0 (a MiniRocket encoder's)."""
    return model.modalities in ("both", "sensor") and (model.encoder == "minirocket" or model.ridge_weight > 0)


def fit_statistics(model: HARModel, batch_stats: Any, sample: dict[str, Any], seed: int | Sequence[int]) -> Any:
    """batch_stats with the state fitted from training examples `sample` (numpy, as read, with their labels).

    MiniRocket's biases and feature statistics (`seed` draws the examples its biases are read from), and for a
    ridge (the head, or beside a trained model) the ridge classifier of every example in `sample`.
    """
    encoder = minirocket_encoder.MiniRocketEncoder(**minirocket_fields(model), parent=None)  # its settings, unbound
    sensor, mask = sample[batch_lib.SENSOR], sample[batch_lib.SENSOR_MASK]
    if has_ridge(model):
        ridge.check_memory(len(sensor), encoder.plan(sensor.shape[-1]).num_features)
    fitted = {**batch_stats, MINIROCKET_SCOPE: minirocket_encoder.fit(sensor, mask, encoder, seed)}
    if not has_ridge(model):
        return fitted
    standardised = jax.jit(lambda x, m: encoder.apply({"batch_stats": fitted[MINIROCKET_SCOPE]}, x, m)[0][:, 0])
    features = np.concatenate(
        [
            np.asarray(standardised(sensor[start : start + 64], mask[start : start + 64]))
            for start in range(0, len(sensor), 64)
        ]
    )  # [N, F]
    classifier = ridge.fit(features, sample[batch_lib.LABEL], model.num_classes)
    logging.info(
        "ridge fitted on %d examples: alpha %g, leave-one-out accuracy %.4f",
        len(features),
        classifier.alpha,
        classifier.loo_accuracy,
    )
    return fitted | {
        RIDGE_SCOPE: {
            "kernel": classifier.kernel,
            "bias": classifier.bias,
            "alpha": np.float32(classifier.alpha),
            "loo_accuracy": np.float32(classifier.loo_accuracy),
        }
    }


def encoder_stride(config: ml_collections.ConfigDict) -> int:
    """Input steps per encoder step: the segments and the attention weights are at this rate."""
    encoder = config.model.get("encoder", "cnn")
    if encoder == "inception":
        return int(config.model.inception.get("stride", 1))
    if encoder == "minirocket":
        return int(config.model.minirocket.get("stride", 1))
    return math.prod(config.model.encoder_strides)


def count_short_recordings(config: ml_collections.ConfigDict, lengths: np.ndarray, split: str) -> int:
    """How many of a split's recordings (recorded steps `lengths` [N]) have fewer encoder steps than segments.

    Each of the K segments pools its own encoder steps; a shorter recording shares its steps among them
    (keyless_attention.segment_masks) and is scored like any other, as the classical methods pad a short recording.
    What cannot work at all is refused, naming the setting and the sizes: a training split whose typical (median)
    recording is that short, where no segment would learn from a stretch of its own.
    """
    if not uses_sensor(config) or config.model.get("head", "mlp") == "ridge":  # the ridge reads one window
        return 0
    stride = encoder_stride(config)
    segments = config.model.num_segments
    steps = -(-np.asarray(lengths) // stride)  # ceil: each recording's encoder steps
    if split == "train" and len(steps) and np.median(steps) < segments:
        encoder = config.model.get("encoder", "cnn")
        setting = (
            f"config.model.{encoder}.stride={stride}"
            if encoder in ("inception", "minirocket")
            else f"config.model.encoder_strides={tuple(config.model.encoder_strides)} (total stride {stride})"
        )
        raise errors.ConfigError(
            f"{setting} with config.model.num_segments={segments} needs recordings of at least {stride * segments} "
            f"steps (a step per segment), but the training split's typical (median) recording has "
            f"{int(np.median(lengths))}; lower the stride or the segments"
        )
    return int(np.sum(steps < segments))
