"""Simple fusion baseline: [v || mean of the segment] tokens, mean pooling in place of keyless attention."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.fusion = "concat"
    return config
