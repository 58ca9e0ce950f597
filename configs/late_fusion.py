"""Simple fusion baseline: a video classifier and a sensor classifier whose logits are averaged.

The two unimodal baselines trained together; no contrastive term, so nothing ties the modalities before the
logits.
"""

import ml_collections

from configs import common, full


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = full.get_config(arg.variant)
    config.model.fusion = "late"
    config.loss.contrastive_weight = 0.0
    return common.with_size(config, arg.size)
