"""Ablation: the joint tokens are mean-pooled straight into the MLP head, without the Transformer encoder."""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.use_transformer = False
    return config
