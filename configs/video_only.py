"""Baseline: the Video-LLaVA embedding alone (no sensors, hence no contrastive term)."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.modalities = "video"
    config.loss.contrastive_weight = 0.0
    return config
