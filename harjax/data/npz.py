"""Bring-your-own HAR data from .npz files that follow the batch contract.

Required: 'sensor' [N, T, C] float, 'label' [N] int. Optional: 'sensor_mask' [N, T] bool, 'video' [N, d_v]
float, 'class_names' [num_classes] str (fixes the number of classes when some are absent from a split),
'channel_names' [C] str (channels named '<stream>_<axis>' are grouped into streams, e.g. for the robustness
evaluation's removal of one stream at a time; default 'imu<k>_x/y/z' for 3-axis triples, else 'ch<i>'),
'subject' [N] int (who was recorded: a validation split then holds out whole subjects).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from harjax.data import batch as batch_lib

CLASS_NAMES = "class_names"
CHANNEL_NAMES = "channel_names"
SUBJECT = "subject"


def load(path: str, num_classes: int = 0) -> batch_lib.ArrayData:
    """Loads and validates one split; `num_classes` > 0 overrides the count derived from the file."""
    if not path:
        raise batch_lib.DataError(
            "config.data.source='npz' needs config.data.train_path and config.data.eval_path to point at .npz files"
        )
    if not os.path.isfile(path):
        raise batch_lib.DataError(f"{path}: no such .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as error:
        raise batch_lib.DataError(f"{path}: not a readable .npz archive of plain arrays ({error})") from error
    class_names = raw.pop(CLASS_NAMES, None)
    channel_names = raw.pop(CHANNEL_NAMES, None)
    subjects = raw.pop(SUBJECT, None)
    arrays = batch_lib.validate_arrays(raw, origin=path)
    num_channels = arrays[batch_lib.SENSOR].shape[-1]
    if subjects is not None and (
        np.shape(subjects) != (len(arrays[batch_lib.LABEL]),)
        or not np.issubdtype(np.asarray(subjects).dtype, np.integer)
    ):
        raise batch_lib.DataError(
            f"{path}: array '{SUBJECT}' must be int [N], one subject id per example, got "
            f"{np.asarray(subjects).dtype} {list(np.shape(subjects))}"
        )
    if channel_names is not None and len(channel_names) != num_channels:
        raise batch_lib.DataError(
            f"{path}: array '{CHANNEL_NAMES}' has {len(channel_names)} names for {num_channels} sensor channels"
        )

    labels = arrays[batch_lib.LABEL]
    if num_classes <= 0:
        num_classes = len(class_names) if class_names is not None else int(labels.max(initial=0)) + 1
    if labels.size and labels.max() >= num_classes:
        raise batch_lib.DataError(
            f"{path}: array 'label' has class {labels.max()} but only {num_classes} classes "
            "are declared (config.data.num_classes or the 'class_names' array)"
        )
    names = (
        tuple(str(name) for name in class_names)
        if class_names is not None
        else tuple(str(i) for i in range(num_classes))
    )
    if len(names) != num_classes:
        raise batch_lib.DataError(f"{path}: array '{CLASS_NAMES}' has {len(names)} names for {num_classes} classes")

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return batch_lib.ArrayData(
        arrays=arrays,
        num_classes=num_classes,
        class_names=names,
        origin=path,
        fingerprint=digest.hexdigest()[:16],
        video_source={"file": path} if batch_lib.VIDEO in arrays else {},
        subjects=subjects,
        channel_names=tuple(str(name) for name in channel_names) if channel_names is not None else (),
    )
