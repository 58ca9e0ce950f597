"""Baseline: the sensor CNN + Transformer alone (no video, hence no contrastive term); runs on video-free data."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.modalities = "sensor"
    config.loss.contrastive_weight = 0.0
    return config
