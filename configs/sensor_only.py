"""Baseline: the sensor CNN + Transformer alone (no video, hence no contrastive term); runs on video-free data."""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.modalities = "sensor"
    config.loss.contrastive_weight = 0.0
    return common.with_size(config, arg.size)
