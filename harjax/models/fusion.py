"""Classifier over a set of tokens: a pre-LN Transformer encoder with a class token, then an MLP to logits."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, train: bool) -> jax.Array:
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout, deterministic=not train
        )(y, y, mask=attention_mask)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype)(y)
        y = nn.Dense(x.shape[-1], dtype=self.dtype)(nn.gelu(y))
        return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class TokenClassifier(nn.Module):
    """tokens [B, N, D] with token_mask [B, N] -> logits [B, num_classes] (float32).

    With use_transformer=False (the no-Transformer ablation) the valid tokens are mean-pooled instead.
    """

    num_classes: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    head_dim: int
    dropout: float
    use_transformer: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, token_mask: jax.Array, train: bool) -> jax.Array:
        width = tokens.shape[-1]
        x = tokens + self.param("position_embedding", nn.initializers.normal(0.02), tokens.shape[1:]).astype(self.dtype)
        if self.use_transformer:
            cls = jnp.broadcast_to(
                self.param("cls", nn.initializers.zeros, (1, 1, width)).astype(self.dtype), (x.shape[0], 1, width)
            )
            x = jnp.concatenate([cls, x], axis=1)  # [B, 1 + N, D]
            mask = jnp.concatenate([jnp.ones_like(token_mask[:, :1]), token_mask], axis=1)
            attention_mask = nn.make_attention_mask(mask, mask)
            for _ in range(self.num_layers):
                x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.dtype)(x, attention_mask, train)
            pooled = nn.LayerNorm(dtype=self.dtype)(x[:, 0])
        else:
            weights = token_mask[..., None].astype(x.dtype)
            pooled = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1)
        hidden = nn.gelu(nn.Dense(self.head_dim, dtype=self.dtype)(pooled))
        hidden = nn.Dropout(self.dropout, deterministic=not train)(hidden)
        return nn.Dense(self.num_classes, dtype=self.dtype)(hidden).astype(jnp.float32)
