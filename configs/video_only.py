"""Baseline: the Video-LLaVA embedding alone (no sensors, hence no contrastive term)."""

from configs import full


def get_config(variant=None):
    config = full.get_config(variant)
    config.model.modalities = "video"
    config.loss.contrastive_weight = 0.0
    return config
