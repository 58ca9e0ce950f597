"""Ablation: cross-entropy only (lambda = 0), no InfoNCE between video and sensor embeddings."""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.loss.contrastive_weight = 0.0
    return common.with_size(config, arg.size)
