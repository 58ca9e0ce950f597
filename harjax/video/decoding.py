"""A clip's sampled frames, decoded the same way for extraction, prompt tuning and prediction from a raw clip.

A clip is a file and an optional span in seconds (ClipJob). Its NUM_FRAMES frames are sampled evenly over the
span (`frame_indices`) and decoded by seeking to the keyframe before each where the container's packets give a
trustworthy index, else in order (both give the same frames: tests/unit/test_mmact_extract.py). The bytes a clip's path
held are recorded with it (`file_identity`), so a stored embedding can be compared with the file on a rerun.
PyAV is imported on first use (the `build` extra); nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from harjax.video.families import NUM_FRAMES


@dataclasses.dataclass(frozen=True)
class ClipJob:
    """One clip to embed: where its file is, which part of it, and the scene context it is read with."""

    name: str  # the stored file's stem: unique within an extraction folder
    path: str
    context: str  # placed before the video by the model family's prompt ('' for none)
    start_s: float | None = None  # the clip's span in the file's own time; None: from its start / to its end
    end_s: float | None = None

    def inputs(self) -> dict[str, Any]:
        """What of the job, besides the file's bytes, its embedding depends on (compared on every rerun)."""
        return {"start_s": self.start_s, "end_s": self.end_s, "context": self.context}


def frame_indices(num_frames: int, wanted: int = NUM_FRAMES) -> np.ndarray:
    """Evenly spaced indices; a clip shorter than `wanted` repeats frames."""
    return np.arange(0, num_frames, num_frames / wanted).astype(int)[:wanted]


@dataclasses.dataclass(frozen=True)
class _Index:
    """Every frame's presentation timestamp (in stream time_base) and which of them start a GOP, from the packets."""

    pts: np.ndarray  # [n] sorted: position -> pts
    keyframes: np.ndarray  # [k] sorted pts of the keyframes


def _index(container: Any) -> _Index | None:
    """An open clip's frame index from its packets alone (demuxing, no decoding); None where a packet lacks a pts.

    The container is read to its end: seek before decoding from it.
    """
    packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    if not packets or any(pts is None for pts, _ in packets):
        return None
    pts = np.sort(np.array([pts for pts, _ in packets], np.int64))
    keyframes = np.sort(np.array([pts for pts, key in packets if key], np.int64))
    if len(np.unique(pts)) != len(pts) or not len(keyframes) or keyframes[0] != pts[0]:
        return None  # not an index seeking can trust: decode in order
    return _Index(pts, keyframes)


def positions_in_span(path: str, start_s: float | None, end_s: float | None) -> np.ndarray:
    """Positions of the frames whose time lies in [start_s, end_s) (the whole file for None, None)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if start_s is None and end_s is None and stream.frames:
            return np.arange(stream.frames)
        index = _index(container)
        if index is not None and stream.time_base is not None:
            times = index.pts * float(stream.time_base)
        else:
            container.seek(0)
            times = np.array([frame.time for frame in container.decode(video=0)], np.float64)
    inside = np.ones(len(times), bool)
    if start_s is not None:
        inside &= times >= start_s
    if end_s is not None:
        inside &= times < end_s
    return np.flatnonzero(inside).astype(np.int64)


def _decode_in_order(container: Any, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted positions' frames (sorted positions), decoding every frame from the start up to the last."""
    kept, decoded = {}, 0
    for position, frame in enumerate(container.decode(video=0)):
        decoded += 1
        if position in wanted:
            kept[position] = frame.to_ndarray(format="rgb24")
        if position >= wanted[-1]:
            break
    return kept, decoded


def _decode_by_seeking(container: Any, index: _Index, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted positions' frames (sorted positions), each decoded from the keyframe before it.

    A frame in the GOP already being decoded, after the last one kept, is reached by decoding on instead. A frame
    whose pts the decoder never gives is left out (the caller decodes in order then).
    """
    stream = container.streams.video[0]
    kept, decoded, current, frames = {}, 0, None, iter(())
    for position in wanted:
        target = int(index.pts[position])
        keyframe = int(index.keyframes[np.searchsorted(index.keyframes, target, side="right") - 1])
        if current is None or not keyframe <= current < target:
            container.seek(keyframe, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            decoded += 1
            current = frame.pts
            if current is None or current >= target:
                break
        if current == target:
            kept[position] = frame.to_ndarray(format="rgb24")
    return kept, decoded


def decode_frames(path: str, indices: np.ndarray, seek: bool = True) -> tuple[dict[int, np.ndarray], int]:
    """({position: frame [H, W, 3] uint8} of the wanted positions that exist, frames decoded to get them).

    With `seek`, each wanted frame is reached from the keyframe before it instead of decoding every frame from the
    start: the same frames as in order, since a GOP decodes from its keyframe alone. Clips whose packets give no
    frame index, or whose decoder gives other timestamps than the packets, are decoded in order.
    """
    import av

    wanted = sorted({int(i) for i in indices})
    decoded = 0
    with av.open(path) as container:
        index = _index(container) if seek else None
        if seek:
            container.seek(0)  # the index read the packets to the end
        if index is not None and wanted[-1] < len(index.pts):
            kept, decoded = _decode_by_seeking(container, index, wanted)
            if len(kept) == len(wanted):
                return kept, decoded
            container.seek(0)
        kept, in_order = _decode_in_order(container, wanted)
    return kept, decoded + in_order


def read_frames(
    path: str, indices: np.ndarray | None = None, start_s: float | None = None, end_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(frames [8, H, W, 3] uint8, their positions in the file) with PyAV; raises on an undecodable or empty clip.

    Frames at `indices`, by default 8 evenly spaced over the span [start_s, end_s) of the file. Only those are
    decoded as far as the container allows (decode_frames), converted and kept (a 1544-frame 1080p clip would take
    9 GB in full).
    """
    if indices is None:
        positions = positions_in_span(path, start_s, end_s)
        if not len(positions):
            span = "" if start_s is None and end_s is None else f" in [{start_s}, {end_s}) s"
            raise ValueError(f"{path}: no video frames{span}")
        indices = positions[frame_indices(len(positions))]
    kept, _ = decode_frames(path, indices)
    if not kept:
        raise ValueError(f"{path}: no decodable video frames")
    # Where the container over-reported its length, the last sample decoded stands in for the missing ones.
    indices = np.array([max(i for i in kept if i <= index) for index in indices])
    return np.stack([kept[i] for i in indices]), indices


def sampling_interval_s(path: str, indices: np.ndarray) -> float | None:
    """Mean seconds between the sampled frames at `indices` (at least one frame period); None without a frame rate."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
    if not rate:
        return None
    frames_apart = (int(indices[-1]) - int(indices[0])) / max(len(indices) - 1, 1)
    return max(frames_apart, 1.0) / rate


def clip_duration(path: str) -> float:
    """Seconds from the first frame's start to the last frame's end, from the container's own metadata."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        rate = float(stream.average_rate or 0)
        frames = stream.frames or sum(1 for _ in container.decode(video=0))
    if not rate or not frames:
        raise ValueError(f"{path}: neither a duration nor a frame rate in the container")
    return frames / rate


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str) -> dict[str, Any]:
    """Which bytes a clip's path held: its path, size, modification time and sha256 (stored with its embedding)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def same_file(path: str, recorded: dict[str, Any]) -> bool:
    """Whether `path` holds the bytes `recorded` (file_identity) describes.

    The recorded file untouched (same path, size and modification time) is trusted without reading it, so a rerun
    costs a stat per clip; a copy or a move is compared by content (it keeps its embedding), an edit in place too.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return False
    if stat.st_size != recorded["size"]:
        return False
    if os.path.abspath(path) == recorded["path"] and stat.st_mtime_ns == recorded["mtime_ns"]:
        return True
    return _sha256(path) == recorded["sha256"]


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    """One clip's sampled frames, or why it could not be decoded."""

    job: ClipJob
    frames: np.ndarray | None = None  # [8, H, W, 3] uint8; None once prepared into model inputs, or on error
    indices: np.ndarray | None = None  # [8] their positions in the file
    interval_s: float | None = None  # seconds between sampled frames (None: the container has no frame rate)
    error: str | None = None  # set exactly when the clip could not be decoded
    file: dict[str, Any] | None = None  # file_identity of the clip, read before its frames


def decode(job: ClipJob) -> DecodedClip:
    """The clip's 8 sampled frames (read_frames), or the error that stopped them."""
    try:
        file = file_identity(job.path)
        frames, indices = read_frames(job.path, start_s=job.start_s, end_s=job.end_s)
        interval_s = sampling_interval_s(job.path, indices)
    except Exception as error:  # noqa: BLE001  PyAV raises many types; every one is reported
        return DecodedClip(job, error=f"{type(error).__name__}: {error}")
    return DecodedClip(job, frames, indices, interval_s, file=file)
