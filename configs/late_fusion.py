"""Simple fusion baseline: a video classifier and a sensor classifier whose logits are averaged.

The two unimodal baselines trained together; no contrastive term, so nothing ties the modalities before the
logits.
"""

import ml_collections

from configs import full


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = full.get_config(variant)
    config.model.fusion = "late"
    config.loss.contrastive_weight = 0.0
    return config
