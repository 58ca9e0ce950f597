"""Baseline: the sensor CNN + Transformer alone (no video, hence no contrastive term); runs on video-free data."""

from configs import full


def get_config(variant=None):
    config = full.get_config(variant)
    config.model.modalities = "sensor"
    config.loss.contrastive_weight = 0.0
    return config
