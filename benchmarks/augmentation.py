"""benchmarks/augmentation.png: each sensor augmentation (harjax/training/augment.py) on a real recording.

    pip install --no-deps aeon==1.6.0        # its wheel ships the recording (UEA BasicMotions)
    python benchmarks/augmentation.py [--output=benchmarks/augmentation.png --example=0]

One BasicMotions recording (a smartwatch's 3-axis accelerometer and gyroscope, 10 Hz, 10 s), standardised per
recording and padded with 20 steps to show that padding stays zero, augmented by each transformation alone with
settings stronger than a recipe's, so the change is visible; two channels are drawn (accelerometer x, gyroscope x).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import real_sensor_accuracy  # noqa: E402
from configs import full  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.data import (
    batch as batch_lib,  # noqa: E402
    normalization,
)
from harjax.training import augment  # noqa: E402

SHOWN = {
    "jitter": 0.2,
    "scale": 0.3,
    "magnitude_warp": 0.3,
    "time_warp": 0.4,
    "crop": 0.6,
    "shift": True,
    "stream_drop": 0.6,
}
STREAMS = ((0, 1, 2), (3, 4, 5))
CHANNELS = {"accelerometer x": 0, "gyroscope x": 3}
PADDING = 20

_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "augmentation.png"), "the figure to write"
)
_EXAMPLE = flags.DEFINE_integer("example", 0, "which training recording of BasicMotions")


def main(argv: list[str]) -> None:
    del argv
    example = _EXAMPLE.value
    series, labels = real_sensor_accuracy.read_ts(
        os.path.join(real_sensor_accuracy.aeon_directory(), "BasicMotions", "BasicMotions_TRAIN.ts")
    )
    recording = series[example].T.astype(np.float32)  # [T, 6]
    steps = len(recording)
    sensor = np.zeros((1, steps + PADDING, 6), np.float32)
    sensor[0, :steps] = recording
    mask = np.arange(steps + PADDING)[None] < steps
    batch = {batch_lib.SENSOR: normalization.standardise(sensor, mask, "recording"), batch_lib.SENSOR_MASK: mask}
    figure, panels = plt.subplots(len(SHOWN), len(CHANNELS), figsize=(11, 2.0 * len(SHOWN)), sharex=True, squeeze=False)
    time = np.arange(steps + PADDING) / real_sensor_accuracy.DATASETS["BasicMotions"]["rate_hz"]
    for row, (name, value) in enumerate(SHOWN.items()):
        settings = full.get_config("synthetic").data.augment
        settings[name] = value
        out = np.asarray(augment.augment(batch, jax.random.key(row), settings, STREAMS)[batch_lib.SENSOR])[0]
        for column, (channel_name, channel) in enumerate(CHANNELS.items()):
            axes = panels[row, column]
            axes.plot(time, batch[batch_lib.SENSOR][0, :, channel], color="0.6", linewidth=1.2, label="before")
            axes.plot(time, out[:, channel], color="tab:red", linewidth=0.9, label="after")
            axes.axvspan(
                steps / real_sensor_accuracy.DATASETS["BasicMotions"]["rate_hz"],
                time[-1],
                color="0.93",
                label="padding",
            )
            axes.set_title(f"{name}={value}: {channel_name}", fontsize=9)
            axes.set_ylabel("standardised", fontsize=8)
    panels[0, -1].legend(fontsize=8, loc="upper right")
    for axes in panels[-1]:
        axes.set_xlabel("time (s)")
    figure.suptitle(
        f"harjax augmentations on a real recording (UEA BasicMotions, training example {example}: {labels[example]})"
    )
    figure.tight_layout()
    figure.savefig(_OUTPUT.value, dpi=110, metadata={"Software": None})
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
