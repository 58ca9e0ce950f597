r"""Sensors alone on small real datasets (a few to a few hundred recordings per class): one recipe for all of them.

What it changes from configs/sensor_only.py, each chosen on the validation split of real IMU data, never its test
split (benchmarks/real_sensor_accuracy.py, benchmarks/RESULTS.md): each recording standardised by its own statistics
(devices and people differ in offset and gain) with its level kept in the training split's units ('recording_level':
which way gravity points tells lying from standing; on HAPT's held-out subjects a single member's validation macro-F1
is 0.991 against 0.973 with 'recording'); the InceptionTime-style encoder, whose receptive field spans a whole
gesture, with InceptionTime's 32 filters per branch and a first stride of 2 (on CricketX's validation split 0.82
macro-F1 against 0.78 with 16 filters at stride 1, at the same cost; 16 filters at stride 2: 0.73; its receptive
field doubles to 457 steps); InceptionTime's BatchNorm in its blocks rather than a LayerNorm per step (over the
batch's recorded steps only: a per-step LayerNorm rescales a still stretch of a one-channel recording to the loudness
of a swing; ensembles' validation macro-F1 on CricketX 0.866 against 0.812, HAPT and PickupGestureWiimoteZ in
RESULTS.md); at least 5 passes over the training split (config.train.min_epochs: HAPT's thousands of windows get
1,853 steps, the small sets keep 1000, already tens to hundreds of passes); the segment tokens mean-pooled into the
MLP without a Transformer (InceptionTime's global pooling; on PickupGestureWiimoteZ's validation split 0.87 macro-F1
against 0.73 with one); an ensemble of 3 members trained side by side (their mean probabilities predict; 3 rather
than InceptionTime's 5 keeps every set under 10 minutes a seed on 2 CPU cores); more dropout and weight decay,
augmentation of the sensors, and a validation split for choosing the checkpoint.
Bring the data as npz files:

    python -m harjax.main --config=configs/sensor_small.py --workdir=W --config.data.source=npz \\
        --config.data.train_path=train.npz --config.data.eval_path=test.npz
"""

import ml_collections

from configs import common, full, sensor_only


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = sensor_only.get_config(arg.variant)
    config.data.sensor_normalization = "recording_level"
    config.data.validation_fraction = 0.2
    config.data.augment.update(jitter=0.05, scale=0.1, magnitude_warp=0.1, time_warp=0.1, crop=0.9)
    config.model.update(
        encoder="inception",
        ensemble_size=3,
        use_transformer=False,
        model_dim=64,
        num_layers=1,
        num_heads=4,
        mlp_dim=128,
        head_dim=64,
        dropout=0.2,
    )
    config.model.inception.update(filters=32, bottleneck=32, stride=2, norm="batch")
    config.train.update(
        batch_size=16,
        eval_batch_size=64,
        num_steps=1000,
        min_epochs=5,
        warmup_steps=100,
        learning_rate=1e-3,
        weight_decay=0.05,
        eval_every=50,
        checkpoint_every=50,
        log_every=25,
        keep_checkpoints=2,
    )
    return common.with_size(config, arg.size)
