"""Ablation: the joint tokens are mean-pooled straight into the MLP head, without the Transformer encoder."""

from configs import full


def get_config(variant=None):
    config = full.get_config(variant)
    config.model.use_transformer = False
    return config
