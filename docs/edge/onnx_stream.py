"""Window-by-window activity predictions from a sensor CSV with numpy and onnxruntime only: no JAX, no harjax.

The code a phone app, a watch companion or a Raspberry Pi runs. It reads what harjax's export wrote into a bundle
(bundle.json: the channels in order, their sampling rate, how they are standardised, the class names; and one
exported ONNX model with its signature.json: the window's steps) and redoes, in plain numpy, what harjax.serving
does before the model: resample onto the model's rate, cut windows, standardise each.

    pip install numpy onnxruntime
    python onnx_stream.py --bundle=BUNDLE --format=onnx_int8 --csv=recording.csv [--hop_s=1] [--threads=1]

The CSV's header is 'time,<channel>,...' (time in seconds; the bundle's channel names, in any order). Prints one CSV
row per window: start and end (seconds, the recording's clock), the predicted class and its probability.
For a recording with gaps or a clock that jumps back, harjax.predict --stream masks and splits where this plain
resampling interpolates; on a clean recording both give the same windows and predictions
(tests/integration/test_edge.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
import onnxruntime

MIN_STD = 1e-6  # a channel without variation standardises to zero, as in training


def read_csv(path: str, channel_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(time [T] seconds, values [T, C] in the model's channel order)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [name.strip() for name in rows[0]]
    if header[0] != "time" or sorted(header[1:]) != sorted(channel_names):
        sys.exit(f"{path}: the header must be 'time' and the model's channels {channel_names}, got {header}")
    table = np.asarray([[float(cell) for cell in row] for row in rows[1:] if row], np.float64)
    return table[:, 0], table[:, [header.index(name) for name in channel_names]]


def resample(time: np.ndarray, values: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(grid [S] seconds from the first timestamp at rate_hz, values [S, C] linearly interpolated onto it)."""
    steps = int(np.floor((time[-1] - time[0]) * rate_hz + 1e-9)) + 1
    grid = time[0] + np.arange(steps) / rate_hz
    return grid, np.stack([np.interp(grid, time, values[:, c]) for c in range(values.shape[1])], axis=1)


def standardise(window: np.ndarray, normalization: dict) -> np.ndarray:
    """window [T, C] as the model was trained to read it (harjax/data/normalization.py's modes)."""
    mode = normalization["mode"]
    mean = np.asarray(normalization.get("mean", 0.0))
    std = np.asarray(normalization.get("std", 1.0))
    if mode == "dataset":
        return ((window - mean) / std).astype(np.float32)
    own_mean, own_std = window.mean(axis=0), np.maximum(window.std(axis=0), MIN_STD)
    standardised = (window - own_mean) / own_std
    if mode == "recording_level":  # the recording's level kept, in the training split's units
        standardised = standardised + (own_mean - mean) / std
    return standardised.astype(np.float32)


def main() -> None:
    """Prints one row per window of the CSV: what the bundle's exported model predicts there."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a harjax bundle with an exported ONNX model")
    parser.add_argument("--format", default="onnx_int8", help="the bundle's folder: onnx, onnx_int8 or onnx_fp16")
    parser.add_argument("--csv", required=True, help="the recording: time,<channel>,...")
    parser.add_argument("--hop_s", type=float, default=1.0, help="seconds between window starts")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime's threads")
    args = parser.parse_args()

    with open(os.path.join(args.bundle, "bundle.json")) as f:
        meta = json.load(f)
    with open(os.path.join(args.bundle, args.format, "signature.json")) as f:
        window_steps = json.load(f)["steps"]
    if meta["config"]["model"]["modalities"] != "sensor":
        sys.exit(f"{args.bundle}: the model reads video; a device without a camera runs a sensor-only model")
    inputs = meta["inputs"]
    rate, class_names = inputs["sampling_rate_hz"], meta["class_names"]

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(os.path.join(args.bundle, args.format, "model.onnx"), options)
    sensor_name, mask_name = (node.name for node in session.get_inputs())

    time, values = read_csv(args.csv, inputs["channel_names"])
    grid, values = resample(time, values, rate)
    hop = max(1, round(args.hop_s * rate))
    mask = np.ones((1, window_steps), bool)
    writer = csv.writer(sys.stdout)
    writer.writerow(["start_s", "end_s", "predicted", "probability"])
    for start in range(0, len(grid) - window_steps + 1, hop):
        window = standardise(values[start : start + window_steps].astype(np.float32), inputs["normalization"])
        logits = session.run(None, {sensor_name: window[None], mask_name: mask})[0][0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        begins = float(grid[start])
        writer.writerow(
            [round(begins, 4), round(begins + window_steps / rate, 4), class_names[best], f"{probabilities[best]:.6f}"]
        )


if __name__ == "__main__":
    main()
