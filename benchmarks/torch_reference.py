"""The harjax model, loss and optimizer written in PyTorch, as a PyTorch user would: the speed reference.

Same computation as harjax.models.har_model.HARModel with modalities='both', fusion='attention' and a
Transformer (configs/full.py), step for step: batch-statistics video standardisation, Conv1d -> LayerNorm ->
tanh-GELU sensor blocks with masking, keyless attention per segment (v^T W once per example), joint tokens
[v || a_k] W with v's share once per example (harjax's two algorithmic savings, so the benchmark compares
frameworks, not algorithms), pre-LN Transformer with a class token, MLP head, projection heads, CE + lambda *
symmetric InfoNCE with a learnable, capped temperature, global-norm clipping and AdamW with weight decay on
matrices only. `load_flax_variables` copies a harjax model's weights in, and
tests/integration/test_torch_reference.py checks that both give the same logits and loss, so the benchmark compares
two implementations of one model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LAYER_NORM_EPS = 1e-6  # flax's default; torch's is 1e-5


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # flax.linen.gelu's default


def segment_masks(mask: torch.Tensor, num_segments: int) -> torch.Tensor:
    """mask [B, n] -> [B, K, n]: K contiguous segments of each example's recorded steps."""
    rank = torch.cumsum(mask.long(), dim=-1) - 1
    length = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    segment = torch.div(rank * num_segments, length, rounding_mode="floor")
    return mask[:, None, :] & (segment[:, None, :] == torch.arange(num_segments, device=mask.device)[None, :, None])


def masked_mean(sequence: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """sequence [B, n, d], masks [B, K, n] -> [B, K, d]."""
    weights = masks.to(sequence.dtype)
    return torch.einsum("bkn,bnd->bkd", weights, sequence) / weights.sum(-1, keepdim=True).clamp(min=1)


class SensorEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: tuple[int, ...], strides: tuple[int, ...], kernel_size: int):
        super().__init__()
        widths = (in_channels, *channels)
        self.padding = ((kernel_size - 1) // 2, kernel_size // 2)
        self.strides = strides
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], kernel_size, stride) for i, stride in enumerate(strides)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width, eps=_LAYER_NORM_EPS) for width in channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C], mask [B, T] -> [B, n, d_s], [B, n]."""
        for conv, norm, stride in zip(self.convs, self.norms, self.strides, strict=True):
            x = x * mask[..., None]
            x = conv(F.pad(x.transpose(1, 2), self.padding)).transpose(1, 2)  # Conv1d wants [B, C, T]
            mask = mask[:, ::stride]
            x = _gelu(norm(x))
        return x * mask[..., None], mask


class KeylessAttention(nn.Module):
    def __init__(self, video_dim: int, sensor_dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(video_dim, sensor_dim) / math.sqrt(video_dim))

    def forward(self, video: torch.Tensor, sensor: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        query = video @ self.w  # [B, d_s]
        scores = torch.einsum("bd,bnd->bn", query, sensor) / math.sqrt(sensor.shape[-1])
        scores = scores[:, None, :].masked_fill(~masks, torch.finfo(scores.dtype).min)  # [B, K, n]
        alpha = torch.softmax(scores, dim=-1) * masks
        return torch.einsum("bkn,bnd->bkd", alpha, sensor)


class EncoderBlock(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=_LAYER_NORM_EPS)
        self.attention = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=_LAYER_NORM_EPS)
        self.mlp_in, self.mlp_out = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.dropout(self.attention(y, y, y, key_padding_mask=padding, need_weights=False)[0])
        return x + self.dropout(self.mlp_out(_gelu(self.mlp_in(self.norm2(x)))))


class TokenClassifier(nn.Module):
    def __init__(
        self,
        num_tokens: int,
        width: int,
        num_classes: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int,
        head_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.position_embedding = nn.Parameter(0.02 * torch.randn(num_tokens, width))
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, num_heads, mlp_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width, eps=_LAYER_NORM_EPS)
        self.head_in, self.head_out = nn.Linear(width, head_dim), nn.Linear(head_dim, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        x = tokens + self.position_embedding
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1 + K, D]
        padding = ~torch.cat([torch.ones_like(token_mask[:, :1]), token_mask], dim=1)
        for block in self.blocks:
            x = block(x, padding)
        return self.head_out(self.dropout(_gelu(self.head_in(self.norm(x[:, 0])))))


class HARModel(nn.Module):
    """Returns (logits, video_embedding, sensor_embedding, logit_scale)."""

    def __init__(self, model_config: Any, loss_config: Any, num_classes: int, video_dim: int, sensor_channels: int):
        super().__init__()
        m = model_config
        sensor_dim = m.encoder_channels[-1]
        self.num_segments = m.num_segments
        self.video_standardise = nn.BatchNorm1d(video_dim, momentum=0.01, affine=False)  # flax momentum 0.99
        self.sensor_encoder = SensorEncoder(
            sensor_channels, tuple(m.encoder_channels), tuple(m.encoder_strides), m.encoder_kernel_size
        )
        self.attention = KeylessAttention(video_dim, sensor_dim)
        self.joint_token = nn.Linear(video_dim + sensor_dim, m.model_dim)
        self.classifier = TokenClassifier(
            m.num_segments, m.model_dim, num_classes, m.num_layers, m.num_heads, m.mlp_dim, m.head_dim, m.dropout
        )
        self.video_projection = nn.Linear(video_dim, m.projection_dim)
        self.sensor_projection = nn.Linear(sensor_dim, m.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / loss_config.temperature)))

    def forward(
        self, video: torch.Tensor, sensor: torch.Tensor, sensor_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        video = self.video_standardise(video)
        sequence, sequence_mask = self.sensor_encoder(sensor, sensor_mask)
        segments = segment_masks(sequence_mask, self.num_segments)  # [B, K, n]
        pooled = self.attention(video, sequence, segments)
        # joint_token([v || a_k]) with v's share once per example, as harjax's JointTokens: [B, K, D]
        video_weight, pooled_weight = self.joint_token.weight.split([video.shape[-1], pooled.shape[-1]], dim=1)
        tokens = F.linear(video, video_weight, self.joint_token.bias)[:, None] + F.linear(pooled, pooled_weight)
        logits = self.classifier(tokens, segments.any(-1))
        sensor_summary = masked_mean(sequence, sequence_mask[:, None])[:, 0]
        return (logits, self.video_projection(video), self.sensor_projection(sensor_summary), self.logit_scale.exp())


def info_nce(video: torch.Tensor, sensor: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    video, sensor = F.normalize(video, dim=-1, eps=1e-6), F.normalize(sensor, dim=-1, eps=1e-6)
    logits = logit_scale * video @ sensor.T
    labels = torch.arange(video.shape[0], device=video.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def objective(model: HARModel, batch: Mapping[str, torch.Tensor], contrastive_weight: float) -> torch.Tensor:
    logits, video, sensor, logit_scale = model(batch["video"], batch["sensor"], batch["sensor_mask"])
    return F.cross_entropy(logits, batch["label"]) + contrastive_weight * info_nce(video, sensor, logit_scale)


def make_optimizer(
    model: HARModel, train_config: Any, schedule: Callable[[int], float]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with decay on matrices only (ndim >= 2), as harjax.training.step.make_optimizer; the schedule is per step.

    The (optax) schedule is tabulated once, so no JAX call lands in torch's timed steps.
    """
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_config.learning_rate,
    )
    factors = np.asarray(schedule(np.arange(train_config.num_steps + 1)), np.float64) / train_config.learning_rate
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factors[min(step, len(factors) - 1)])


def make_train_step(
    model: HARModel, config: Any, schedule: Callable[[int], float], compile_loss: bool = False
) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """One update: loss, backward, global-norm clipping, AdamW, learning-rate step, temperature cap.

    config.model.dtype 'bfloat16' runs the loss under torch.autocast (bf16 compute, float32 parameters), as a
    PyTorch user trains in bf16 and as harjax's bf16 compute does.
    """
    optimizer, scheduler = make_optimizer(model, config.train, schedule)
    loss_fn = torch.compile(objective) if compile_loss else objective
    max_log_scale = math.log(config.loss.max_logit_scale)
    device_type = next(model.parameters()).device.type
    bf16 = config.model.dtype == "bfloat16"

    def step(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batch, config.loss.contrastive_weight)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=max_log_scale)
        return loss.detach()

    return step


def torch_batch(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A harjax batch (harjax.data.batch names) as tensors; labels become int64 as torch's losses need."""
    tensors = {name: torch.from_numpy(np.asarray(batch[name])) for name in ("video", "sensor", "sensor_mask")}
    return tensors | {"label": torch.from_numpy(np.asarray(batch["label"], np.int64))}


def load_flax_variables(model: HARModel, variables: Mapping[str, Any]) -> None:
    """Copies a harjax HARModel's params and batch_stats into `model` (layouts converted, names mapped)."""
    params = variables["params"]

    def t(array: Any) -> torch.Tensor:
        return torch.from_numpy(np.array(array, dtype=np.float32))

    def dense(layer: nn.Linear, flax_dense: Mapping[str, Any]) -> None:
        layer.weight.copy_(t(flax_dense["kernel"]).T)
        layer.bias.copy_(t(flax_dense["bias"]))

    def layer_norm(layer: nn.LayerNorm, flax_norm: Mapping[str, Any]) -> None:
        layer.weight.copy_(t(flax_norm["scale"]))
        layer.bias.copy_(t(flax_norm["bias"]))

    with torch.no_grad():
        stats = variables["batch_stats"]["video_standardise"]
        model.video_standardise.running_mean.copy_(t(stats["mean"]))
        model.video_standardise.running_var.copy_(t(stats["var"]))
        encoder = params["SensorEncoder_0"]
        for i, (conv, norm) in enumerate(zip(model.sensor_encoder.convs, model.sensor_encoder.norms, strict=True)):
            block = encoder[f"ConvBlock_{i}"]
            conv.weight.copy_(t(block["kernel"]).permute(2, 1, 0))  # [k, in, out] -> [out, in, k]
            conv.bias.copy_(t(block["conv_bias"]))
            layer_norm(norm, block)
        model.attention.w.copy_(t(params["KeylessAttention_0"]["w"]))
        dense(model.joint_token, params["joint_token"])
        dense(model.video_projection, params["video_projection"])
        dense(model.sensor_projection, params["sensor_projection"])
        model.logit_scale.copy_(t(params["logit_scale"]))
        classifier = params["classifier"]
        model.classifier.position_embedding.copy_(t(classifier["position_embedding"]))
        model.classifier.cls.copy_(t(classifier["cls"]))
        layer_norm(model.classifier.norm, classifier["LayerNorm_0"])
        dense(model.classifier.head_in, classifier["Dense_0"])
        dense(model.classifier.head_out, classifier["Dense_1"])
        for i, block in enumerate(model.classifier.blocks):
            flax_block = classifier[f"EncoderBlock_{i}"]
            attention = flax_block["MultiHeadDotProductAttention_0"]
            width = block.attention.embed_dim
            # flax q/k/v kernels [D, heads, head_dim] -> torch in_proj rows [3D, D]
            block.attention.in_proj_weight.copy_(
                torch.cat([t(attention[name]["kernel"]).reshape(width, width).T for name in ("query", "key", "value")])
            )
            block.attention.in_proj_bias.copy_(
                torch.cat([t(attention[name]["bias"]).reshape(width) for name in ("query", "key", "value")])
            )
            block.attention.out_proj.weight.copy_(t(attention["out"]["kernel"]).reshape(width, width).T)
            block.attention.out_proj.bias.copy_(t(attention["out"]["bias"]))
            layer_norm(block.norm1, flax_block["LayerNorm_0"])
            layer_norm(block.norm2, flax_block["LayerNorm_1"])
            dense(block.mlp_in, flax_block["Dense_0"])
            dense(block.mlp_out, flax_block["Dense_1"])
