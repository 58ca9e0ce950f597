"""The recordings manifest: one row per example of a lab's own video + wearable recordings, validated on reading.

A manifest is a CSV file (a header row) or JSON lines (one object per line), in UTF-8 (a spreadsheet's
byte-order mark is skipped). Paths are relative to the manifest's folder. A JSON object naming a key twice is
refused (JSON would keep only the last). Columns (keys):

  id               required; unique; at most MAX_ID_LENGTH (200) ASCII letters, digits, '.', '_' or '-' (it names
                   the example's embedding file, '<id>.npz', which must fit a file name of 255 bytes)
  sensors          required; the example's sensor files, one per stream (a stream named twice is refused).
                   CSV: 'wrist=s1/w.csv;thigh=s1/t.csv' (or one path: the stream is called 'sensor'); JSON:
                   {"wrist": "s1/w.csv"} or
                   {"wrist": {"path": ..., "channels": [...], "rate_hz": ..., "time_column": ..., "time_unit": ...,
                   "offset_s": ...}} (a stream's own options over the row's columns below)
                   Files: .csv (a header row naming the channels), .npy ([T, C]), .parquet, .mat (its one 2-D
                   numeric variable, e.g. UTD-MHAD's d_iner). An example's channels are '<stream>_<column>'.
  time_column      the column of timestamps in .csv/.parquet files (default 'time'); without one, a fixed rate
  time_unit        s | ms | us | ns (default s)
  sensor_rate_hz   the fixed rate of files without timestamps (.npy, .mat, or .csv/.parquet without time_column)
  channels         channel names of files without a header (.npy, .mat): comma-separated
  sensor_offset_s  the sensor clock's reading at the clip's time 0 (default 0): sensor time t is clip time
                   t - sensor_offset_s. For sensors stamped in epoch seconds, the epoch time the clip starts.
                   Streams on different clocks each give their own (JSON: the stream's 'offset_s')
  clip             the video file (optional: a manifest without clips builds a sensors-only dataset)
  clip_start_s, clip_end_s
                   the example's span within the clip (default: the whole clip); the sensors are aligned to it
  label            the activity's class name (required to build; prediction reads it when present)
  subject          an integer: 1, "1" or 1.0, not 1.5 (required for leave-subjects-out protocols and validation
                   hold-outs)
  session          an integer, as subject (default 0)
  split            train | test: the manifest's own protocol (optional)
  context          the scene description a 'context' prompt reads (default '')
  anything else    a grouping column, kept with the example as text
Every error names the manifest, the row (1 = the first example) and the column. A row's clip is read with the
context its prompt set gives it (`context`): the same rule for extraction, prompt tuning and prediction.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from harjax import errors
from harjax.video import decoding

SENSOR_SUFFIXES = (".csv", ".npy", ".parquet", ".mat")
TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
SPLITS = ("train", "test")
KNOWN = (
    "id",
    "sensors",
    "time_column",
    "time_unit",
    "sensor_rate_hz",
    "channels",
    "sensor_offset_s",
    "clip",
    "clip_start_s",
    "clip_end_s",
    "label",
    "subject",
    "session",
    "split",
    "context",
)
_ID = re.compile(r"[A-Za-z0-9._-]+")  # ASCII only: the id and stream names become file and channel names
_ID_RULE = "ASCII letters, digits, '.', '_' or '-'"
MAX_ID_LENGTH = 200  # '<id>.npz' and its temporary names ('tmpXXXXXXXX<id>.npz.tmp') fit a 255-byte file name
_FILE_OPTIONS = ("path", "channels", "rate_hz", "time_column", "time_unit", "offset_s")


class ManifestError(errors.UserError):
    """A manifest row that cannot be read: the message names the manifest, the row and the column."""


class _Object(dict):
    """A JSON object that remembers the keys it named more than once (a plain dict keeps only the last)."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        self.repeated = [key for key, count in collections.Counter(key for key, _ in pairs).items() if count > 1]


@dataclasses.dataclass(frozen=True)
class SensorFile:
    """One stream's file and how to read its time."""

    stream: str
    path: str  # absolute
    channels: tuple[str, ...] | None  # for files without a header
    rate_hz: float | None  # for files without timestamps
    time_column: str
    time_unit: str
    offset_s: float  # this stream's clock reading at the clip's time 0


@dataclasses.dataclass(frozen=True)
class Recording:
    """One validated manifest row."""

    row: int  # 1-based, the manifest's example number
    id: str
    sensors: tuple[SensorFile, ...]
    clip: str | None  # absolute
    clip_start_s: float | None
    clip_end_s: float | None
    label: str | None
    subject: int | None
    session: int
    split: str | None
    context: str
    groups: dict[str, str]

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(sensor.stream for sensor in self.sensors)


def read(path: str) -> list[Recording]:
    """Every row of a manifest (.csv or .jsonl), validated; the first bad row raises, naming row and column."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: no such manifest")
    root = os.path.dirname(os.path.abspath(path))
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no name
            rows = [dict(row) for row in csv.DictReader(f)]
        for number, row in enumerate(rows, start=1):
            if None in row:
                raise ManifestError(f"{path}: row {number} has more cells than the header has columns")
    elif path.endswith((".jsonl", ".json")):
        rows = []
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate((line for line in f if line.strip()), start=1):
                try:
                    row = json.loads(line, object_pairs_hook=_Object)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}: row {number} is not JSON ({error})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}: row {number} must be a JSON object, got {type(row).__name__}")
                if row.repeated:
                    raise ManifestError(f"{path}: row {number}, column {row.repeated[0]!r}: given twice in the row")
                rows.append(row)
    else:
        raise ManifestError(f"{path}: a manifest is a .csv or .jsonl file")
    if not rows:
        raise ManifestError(f"{path}: no rows")
    recordings = [parse_row(row, number, path, root) for number, row in enumerate(rows, start=1)]
    seen: dict[str, int] = {}
    for recording in recordings:
        if recording.id in seen:
            raise ManifestError(
                f"{path}: row {recording.row}, column 'id': {recording.id!r} is also row {seen[recording.id]}'s"
            )
        seen[recording.id] = recording.row
    return recordings


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(row: dict[str, Any], column: str, where: str, kind: type = float, default: Any = None) -> Any:
    value = row.get(column)
    if _blank(value):
        return default
    try:
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)  # int() would truncate 1.5 to 1
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ManifestError(f"{where}, column {column!r}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and number != number:
        raise ManifestError(f"{where}, column {column!r}: expected a number, got NaN")
    return number


def _stream_twice(stream: str, where: str) -> ManifestError:
    """The error for a stream named twice in a row, whose first file would otherwise be dropped silently."""
    return ManifestError(f"{where}, column 'sensors': stream {stream!r} is given twice (one file per stream)")


def _sensor_specs(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """{stream: {'path': ..., options}} from the CSV form ('a=x.csv;b=y.csv') or the JSON form."""
    if isinstance(value, str):
        specs = {}
        for part in (part.strip() for part in value.split(";") if part.strip()):
            stream, _, file = part.partition("=") if "=" in part else ("sensor", "", part)
            stream = stream.strip()
            if stream in specs:
                raise _stream_twice(stream, where)
            specs[stream] = {"path": file.strip()}
        return specs
    if isinstance(value, dict):
        if getattr(value, "repeated", None):
            raise _stream_twice(value.repeated[0], where)
        specs = {}
        for stream, spec in value.items():
            if getattr(spec, "repeated", None):
                raise ManifestError(f"{where}, column 'sensors': stream {stream!r} gives {spec.repeated[0]!r} twice")
            spec = {"path": spec} if isinstance(spec, str) else spec
            if not isinstance(spec, dict) or "path" not in spec or set(spec) - set(_FILE_OPTIONS):
                raise ManifestError(
                    f"{where}, column 'sensors': stream {stream!r} must be a path or an object with 'path' and "
                    f"any of {_FILE_OPTIONS[1:]}, got {spec!r}"
                )
            specs[str(stream)] = spec
        return specs
    raise ManifestError(f"{where}, column 'sensors': expected 'stream=path;...' or an object, got {value!r}")


def parse_row(row: dict[str, Any], number: int, path: str, root: str) -> Recording:
    """One row validated (`number` and `path` name it in errors; relative paths are taken from `root`)."""
    where = f"{path}: row {number}"
    identifier = str(row.get("id", "")).strip()
    if not _ID.fullmatch(identifier):
        raise ManifestError(f"{where}, column 'id': expected {_ID_RULE}, got {identifier!r}")
    if len(identifier) > MAX_ID_LENGTH:
        raise ManifestError(
            f"{where}, column 'id': {len(identifier)} characters, over the limit of {MAX_ID_LENGTH} (it names a file)"
        )
    if _blank(row.get("sensors")):
        raise ManifestError(f"{where}, column 'sensors': no sensor file")
    time_unit = str(row.get("time_unit") or "s").strip()
    default_rate = _number(row, "sensor_rate_hz", where)
    default_channels = row.get("channels")
    default_offset = _number(row, "sensor_offset_s", where, default=0.0)
    files = []
    for stream, spec in _sensor_specs(row["sensors"], where).items():
        if not _ID.fullmatch(stream):
            raise ManifestError(f"{where}, column 'sensors': stream name {stream!r} must be {_ID_RULE}")
        file = os.path.join(root, str(spec["path"]))
        if not file.lower().endswith(SENSOR_SUFFIXES):
            raise ManifestError(f"{where}, column 'sensors': {spec['path']!r} is none of {SENSOR_SUFFIXES}")
        headerless = file.lower().endswith((".npy", ".mat"))  # the row's 'channels' names only these
        channels = spec.get("channels", default_channels if headerless else None)
        if isinstance(channels, str):
            channels = [name.strip() for name in channels.split(",") if name.strip()]
        unit = str(spec.get("time_unit", time_unit))
        if unit not in TIME_UNITS:
            raise ManifestError(f"{where}, column 'time_unit': expected one of {sorted(TIME_UNITS)}, got {unit!r}")
        rate = _number(spec, "rate_hz", where) if "rate_hz" in spec else default_rate
        offset = _number(spec, "offset_s", where) if "offset_s" in spec else default_offset
        if rate is not None and rate <= 0:
            raise ManifestError(f"{where}, column 'sensor_rate_hz': must be positive, got {rate}")
        files.append(
            SensorFile(
                stream,
                file,
                tuple(channels) if channels else None,
                rate,
                str(spec.get("time_column") or row.get("time_column") or "time"),
                unit,
                offset,
            )
        )
    clip = None if _blank(row.get("clip")) else os.path.join(root, str(row["clip"]))
    start, end = _number(row, "clip_start_s", where), _number(row, "clip_end_s", where)
    if start is not None and end is not None and not end > start:
        raise ManifestError(f"{where}, column 'clip_end_s': {end} is not after clip_start_s {start}")
    if clip is None and (start is not None or end is not None):
        raise ManifestError(f"{where}, column 'clip_start_s': a span needs a 'clip'")
    split = None if _blank(row.get("split")) else str(row["split"]).strip()
    if split is not None and split not in SPLITS:
        raise ManifestError(f"{where}, column 'split': expected one of {SPLITS}, got {split!r}")
    return Recording(
        row=number,
        id=identifier,
        sensors=tuple(files),
        clip=clip,
        clip_start_s=start,
        clip_end_s=end,
        label=None if _blank(row.get("label")) else str(row["label"]).strip(),
        subject=_number(row, "subject", where, int),
        session=_number(row, "session", where, int, 0),
        split=split,
        context=str(row.get("context") or ""),
        groups={key: str(value) for key, value in row.items() if key not in KNOWN and not _blank(value)},
    )


def write(path: str, rows: list[dict[str, Any]]) -> None:
    """A manifest in JSON lines (what readers of other layouts, such as UTD-MHAD's, produce); appears whole."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(temporary, path)


PROMPT_SETS = ("plain", "context")


def context(prompt_set: str, recording: Recording) -> str:
    """The context a row's clip is read with (the model family writes the prompt around it)."""
    if prompt_set not in PROMPT_SETS:
        raise errors.ConfigError(
            f"unknown prompt set {prompt_set!r} for a recordings manifest; choose one of {PROMPT_SETS}"
        )
    return recording.context if prompt_set == "context" else ""


def clip_jobs(recordings: Sequence[Recording], prompt_set: str) -> list[decoding.ClipJob]:
    """One job per row with a clip, in manifest order (the order shards are cut from)."""
    return [
        decoding.ClipJob(
            recording.id, recording.clip, context(prompt_set, recording), recording.clip_start_s, recording.clip_end_s
        )
        for recording in recordings
        if recording.clip is not None
    ]
