"""Ablation: the joint tokens are mean-pooled straight into the MLP head, without the Transformer encoder."""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.use_transformer = False
    return common.with_size(config, arg.size)
