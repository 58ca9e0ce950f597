"""Bring-your-own HAR data from .npz files that follow the batch contract.

Required: 'sensor' [N, T, C] float, 'label' [N] int. Optional: 'sensor_mask' [N, T] bool, 'video' [N, d_v]
float, 'class_names' [num_classes] str (fixes the number of classes when some are absent from a split),
'channel_names' [C] str (channels named '<stream>_<axis>' are grouped into streams, e.g. for the robustness
evaluation's removal of one stream at a time; default 'imu<k>_x/y/z' for 3-axis triples, else 'ch<i>'),
'subject' [N] int (who was recorded: a validation split then holds out whole subjects).
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile

import numpy as np

from harjax.data import batch as batch_lib

CLASS_NAMES = "class_names"
CHANNEL_NAMES = "channel_names"
SUBJECT = "subject"


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; a missing file, or one that is not an .npz of plain arrays, fails naming it."""
    if not os.path.isfile(path):
        raise batch_lib.DataError(f"{path}: no such file" + (" (it is a folder)" if os.path.isdir(path) else ""))
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(64)
        kind = (
            "empty"
            if not head
            else "text"
            if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head)
            else "other data"
        )
        raise batch_lib.DataError(
            f"{path}: not an .npz archive (a zip of .npy arrays, as numpy.savez writes); it holds {kind}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise batch_lib.DataError(
                f"{path}: holds an array of Python objects, which harjax does not unpickle; save "
                "plain arrays (strings as a numpy str array)"
            ) from error
        raise batch_lib.DataError(f"{path}: an array cannot be read ({error})") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise batch_lib.DataError(f"{path}: damaged .npz archive ({error})") from error


def load(path: str, num_classes: int = 0) -> batch_lib.ArrayData:
    """Loads and validates one split; `num_classes` > 0 overrides the count derived from the file."""
    return _split(_checked_path(path), read_arrays(path), num_classes, None)


def load_pair(train_path: str, eval_path: str, num_classes: int = 0) -> tuple[batch_lib.ArrayData, batch_lib.ArrayData]:
    """The training and evaluation splits, which must name their classes alike.

    Different `class_names` in the two files are refused, naming both files and the first difference; names in one
    file only are used for both (and logged), so the report and the bundle name each class once.
    """
    train_raw, eval_raw = read_arrays(_checked_path(train_path)), read_arrays(_checked_path(eval_path))
    names = _common_class_names(train_path, train_raw.get(CLASS_NAMES), eval_path, eval_raw.get(CLASS_NAMES))
    train = _split(train_path, train_raw, num_classes, names)
    return train, _split(eval_path, eval_raw, num_classes or train.num_classes, names)


def _checked_path(path: str) -> str:
    if not path:
        raise batch_lib.DataError(
            "config.data.source='npz' needs config.data.train_path and config.data.eval_path to point at .npz files"
        )
    return path


def _common_class_names(train_path: str, train_names, eval_path: str, eval_names) -> np.ndarray | None:
    if train_names is None or eval_names is None:
        given, path = (train_names, train_path) if train_names is not None else (eval_names, eval_path)
        if given is not None:
            logging.info("class names from %s are used for both splits (the other file names none)", path)
        return given
    train_list, eval_list = [str(name) for name in train_names], [str(name) for name in eval_names]
    if train_list != eval_list:
        index = next(
            (i for i, (a, b) in enumerate(zip(train_list, eval_list, strict=False)) if a != b),
            min(len(train_list), len(eval_list)),
        )
        first = (
            f"class {index} is {train_list[index]!r} in {train_path} and {eval_list[index]!r} in {eval_path}"
            if index < min(len(train_list), len(eval_list))
            else f"{train_path} names {len(train_list)} classes and {eval_path} {len(eval_list)}"
        )
        raise batch_lib.DataError(
            f"array '{CLASS_NAMES}' differs between the splits: {first}; the splits must name "
            "the same classes in the same order"
        )
    return train_names


def _split(path: str, raw: dict[str, np.ndarray], num_classes: int, common_names) -> batch_lib.ArrayData:
    """One split from its arrays; `common_names` (both splits' class names) win over the file's own."""
    raw = dict(raw)
    class_names = raw.pop(CLASS_NAMES, None)
    if common_names is not None:
        class_names = common_names
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
