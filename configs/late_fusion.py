"""Simple fusion baseline: a video classifier and a sensor classifier whose logits are averaged."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.fusion = "late"
    return config
