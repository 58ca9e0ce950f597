"""Simple fusion baseline: [v || mean of the sensor sequence] straight into the MLP head.

No keyless attention, no Transformer (one token, K = 1) and no contrastive term: the plain concatenation
fusion HAR papers compare against. configs/no_attention.py is the ablation that swaps only the attention.
"""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.fusion = "concat"
    config.model.num_segments = 1
    config.model.use_transformer = False
    config.loss.contrastive_weight = 0.0
    return common.with_size(config, arg.size)
