"""Ablation: each segment's sensor steps mean-pooled instead of weighed by the keyless attention.

The joint tokens [v || mean of segment k], the Transformer and the contrastive term stay as in the full model.
"""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.fusion = "concat"
    return config
