"""Ablation: cross-entropy only (lambda = 0), no InfoNCE between video and sensor embeddings."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.loss.contrastive_weight = 0.0
    return config
