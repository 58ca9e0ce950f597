"""Ablation: each segment's sensor steps mean-pooled instead of weighed by the keyless attention.

The joint tokens [v || mean of segment k], the Transformer and the contrastive term stay as in the full model.
"""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.fusion = "concat"
    return common.with_size(config, arg.size)
