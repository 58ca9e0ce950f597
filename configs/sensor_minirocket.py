r"""Sensors alone, MiniRocket's way: fixed random-convolution features and a ridge classifier, fitted, not trained.

The classical member of the small-data recipes (configs/sensor_small.py): MiniRocket's features of the whole
recording (config.model.encoder='minirocket', harjax/models/minirocket_encoder.py) and a ridge classifier on them
whose penalty is chosen by leave-one-out over the training split (config.model.head='ridge',
harjax/models/ridge.py), what aeon's MiniRocketClassifier fits. Everything is fitted before step 0 from the whole
training split (so no validation split is held out: leave-one-out is the validation), and the one step that
follows changes nothing; it runs in seconds. No augmentation: the features are fixed and the ridge is fitted on
the recordings as they are.

    python -m harjax.main --config=configs/sensor_minirocket.py --workdir=W --config.data.source=npz \\
        --config.data.train_path=train.npz --config.data.eval_path=test.npz
"""

import ml_collections

from configs import common, full, sensor_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = sensor_small.get_config(arg.variant)
    config.data.validation_fraction = 0.0
    config.data.augment.update(jitter=0.0, scale=0.0, magnitude_warp=0.0, time_warp=0.0, crop=1.0)
    config.model.update(encoder="minirocket", head="ridge", ensemble_size=1)
    config.train.update(num_steps=1, min_epochs=0, warmup_steps=0, eval_every=1, checkpoint_every=1, log_every=1)
    return common.with_size(config, arg.size)
