r"""A small sensor-only model for phones, watches and a Raspberry Pi: the student distillation trains.

configs/sensor_small.py's recipe (each recording by its own statistics with its level kept, augmentation, a
validation split choosing the checkpoint, BatchNorm'd InceptionTime blocks mean-pooled into the MLP) at a size a
watch runs: one member instead of three, 3 Inception blocks of 16 filters instead of 6 of 32, and a first stride
of 4. Its int8 ONNX model is a few tens of KB and runs a 5 s window at 50 Hz in well under a millisecond on one
CPU thread (benchmarks/inference.py --config=configs/student.py; figures in benchmarks/RESULTS.md). Trained alone
it is the baseline the distilled student is compared with; with a teacher it learns from the teacher's logits too:

    python -m harjax.main --config=configs/student.py --workdir=S --config.distill.teacher=TEACHER_WORKDIR_OR_BUNDLE \
        --config.data.source=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz
    python -m harjax.export --workdir=S --output=S/bundle --format=onnx_int8

The teacher's settings (config.distill: temperature 4, weight 0.7, from configs/full.py) are Hinton et al.'s
usual range, not tuned here.
"""

import ml_collections

from configs import common, full, sensor_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = full.parse_arg(arg)
    config = sensor_small.get_config(arg.variant)
    config.model.update(ensemble_size=1, model_dim=32, mlp_dim=64, head_dim=32)
    config.model.inception.update(depth=3, filters=16, bottleneck=16, residual_every=3, stride=4)
    return common.with_size(config, arg.size)
