"""Baseline: the Video-LLaVA embedding alone (no sensors, hence no contrastive term)."""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.modalities = "video"
    config.loss.contrastive_weight = 0.0
    return common.with_size(config, arg.size)
