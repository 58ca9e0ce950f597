"""Sensor standardisation, one definition for training data and for new recordings (config.data.sensor_normalization).

'dataset': every recording by the per-channel mean and std of the training split's recorded steps. Fits data
  whose absolute levels carry information and are comparable across recordings (one device model, one placement,
  gravity in a known axis: MMAct's phone and watch).
'recording': every recording by its own per-channel mean and std over its recorded steps (the UCR/UEA archives'
  convention). Fits recordings whose offsets and gains vary with the device, its placement or the person (calibration
  drift, another phone), where only the shape of the motion is comparable; it removes each channel's level (e.g.
  which way gravity points), which must then not be what tells classes apart.
'recording_level': 'recording', then each channel shifted by the recording's own mean in the training split's
  units ((recording mean - mean) / std, constant over the recording). The shape is the recording's own, as with
  'recording', and the level stays, as with 'dataset': a waist phone lying down is told from one standing still by
  which way gravity points, where 'recording' makes both pure sensor noise (on HAPT's held-out subjects, benchmarks/
  RESULTS.md). Recordings standardised per series beforehand (the UCR archive's) have no level to keep: for them it
  is 'recording'.
Padding stays exactly zero either way; a channel with no variation keeps std 1e-6, so it standardises to zero.
"""

from __future__ import annotations

import numpy as np

from harjax import errors

MODES = ("dataset", "recording", "recording_level")
_MIN_STD = 1e-6


def check_mode(mode: str) -> str:
    """The normalisation mode, if it is one of MODES."""
    if mode not in MODES:
        raise errors.ConfigError(f"config.data.sensor_normalization must be one of {MODES}, got {mode!r}")
    return mode


def applied(mode: str, mean: np.ndarray, std: np.ndarray) -> dict[str, object]:
    """What a model needs to normalise new recordings as in training (saved in config.json and bundles).

    The mode, and the training split's per-channel `mean` and `std` [C] where the mode reads them (all but
    'recording'): the one place that decides what a bundle carries.
    """
    if check_mode(mode) == "recording":
        return {"mode": mode}
    return {"mode": mode, "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()}


def dataset_statistics(sensor: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean [C], std [C]) over the recorded steps of sensor [N, T, C]."""
    recorded = sensor[mask]  # [num_recorded_steps, C]
    return recorded.mean(axis=0), np.maximum(recorded.std(axis=0), _MIN_STD)


def recording_statistics(sensor: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per recording and channel (mean [N, 1, C], std [N, 1, C]) over each recording's recorded steps."""
    weights = mask[..., None].astype(np.float64)  # [N, T, 1]
    count = np.maximum(weights.sum(axis=1, keepdims=True), 1)
    mean = (sensor * weights).sum(axis=1, keepdims=True) / count
    variance = (((sensor - mean) * weights) ** 2).sum(axis=1, keepdims=True) / count
    return mean.astype(np.float32), np.maximum(np.sqrt(variance), _MIN_STD).astype(np.float32)


def standardise(
    sensor: np.ndarray, mask: np.ndarray, mode: str, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """sensor [N, T, C] standardised on recorded steps (zero elsewhere), float32.

    `mean`, `std` [C]: the training split's, for the modes that read them (see applied).
    """
    if check_mode(mode) == "dataset":
        standardised = (sensor - mean) / std
    else:
        own_mean, own_std = recording_statistics(sensor, mask)  # [N, 1, C] each
        standardised = (sensor - own_mean) / own_std
        if mode == "recording_level":
            standardised = standardised + (own_mean - mean) / std
    return np.where(mask[..., None], standardised, 0.0).astype(np.float32)
