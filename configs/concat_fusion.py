"""Simple fusion baseline: [v || mean of the segment] tokens, mean pooling in place of keyless attention."""

from configs import full


def get_config(variant=None):
    config = full.get_config(variant)
    config.model.fusion = "concat"
    return config
