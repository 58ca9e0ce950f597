"""Simple fusion baseline: a video classifier and a sensor classifier whose logits are averaged."""

from configs import full


def get_config(variant=None):
    config = full.get_config(variant)
    config.model.fusion = "late"
    return config
