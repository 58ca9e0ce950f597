"""Where MMAct keeps what, how its file names map to the 37 classes, and which trials each protocol tests on.

Facts from the release and the public loaders that read it (../shared/notes/mmact.md):
    <root>/<stream>/subject{N}/scene{M}/session{L}/<action>.csv           (4 sensor streams, no camera)
    <root>/<video_root>/subject{N}/cam{C}/scene{M}/session{L}/<action>.mp4
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator

# Sensor folders in channel order: the example's [T, 12] array is these streams' 3 axes each, in this order.
SENSOR_STREAMS = ("acc_phone_clip", "acc_watch_clip", "gyro_clip", "orientation_clip")
ANGULAR_STREAMS = tuple(stream == "orientation_clip" for stream in SENSOR_STREAMS)  # degrees: resample as angles
CAMERAS = (1, 2, 3, 4)
DESK_SCENE = 3
_DESK_RENAMED = ("using_phone", "talking_on_phone")  # in scene 3 these are the separate *_desk classes

CLASSES = tuple(
    sorted(
        (
            "carrying",
            "carrying_heavy",
            "carrying_light",
            "checking_time",
            "closing",
            "crouching",
            "entering",
            "exiting",
            "fall",
            "jumping",
            "kicking",
            "loitering",
            "looking_around",
            "opening",
            "picking_up",
            "pointing",
            "pulling",
            "pushing",
            "running",
            "setting_down",
            "standing",
            "talking",
            "talking_on_phone",
            "throwing",
            "transferring_object",
            "using_phone",
            "walking",
            "waving_hand",
            "drinking",
            "pocket_in",
            "pocket_out",
            "sitting",
            "sitting_down",
            "standing_up",
            "using_pc",
            "using_phone_desk",
            "talking_on_phone_desk",
        )
    )
)

# protocol -> (trial field, values in the test split); everything else is train. cross_view splits cameras, not
# trials: a trial's cam1-3 clips train and its cam4 clip tests.
PROTOCOLS = {
    "cross_subject": ("subject", frozenset(range(17, 21))),
    "cross_view": ("camera", frozenset({4})),
    "cross_scene": ("scene", frozenset({2})),
    "cross_session": ("session", frozenset({5})),
}

_TRIAL_DIRS = re.compile(r"subject(\d+)/scene(\d+)/session(\d+)$")
_VIDEO_DIRS = re.compile(r"subject(\d+)/cam(\d+)/scene(\d+)/session(\d+)$")


@dataclasses.dataclass(frozen=True, order=True)
class Trial:
    """One performance of an action: shared by the four sensor streams and up to four cameras."""

    subject: int
    scene: int
    session: int
    action: str  # one of CLASSES

    @property
    def key(self) -> str:
        return f"subject{self.subject}_scene{self.scene}_session{self.session}_{self.action}"


def clip_name(trial: Trial, camera: int) -> str:
    """The name of a camera's clip of a trial: its embedding file's stem."""
    return f"{trial.key}_cam{camera}"


def action_class(file_stem: str, scene: int) -> str | None:
    """The class of a file name (any case); None for a name that is none of the 37 classes."""
    action = file_stem.strip().lower()
    if scene == DESK_SCENE and action in _DESK_RENAMED:
        action += "_desk"
    return action if action in CLASSES else None


def is_test(protocol: str, trial: Trial, camera: int | None = None) -> bool:
    """Whether a trial (or, for cross_view, one of its camera views) belongs to the protocol's test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    field, test_values = PROTOCOLS[protocol]
    if field == "camera":
        if camera is None:
            raise ValueError("cross_view assigns camera views, not trials: pass camera=")
        return camera in test_values
    return getattr(trial, field) in test_values


@dataclasses.dataclass(frozen=True)
class FoundFile:
    trial: Trial
    path: str
    camera: int | None = None  # videos only


@dataclasses.dataclass
class Scan:
    """Files found under a root, keyed by trial, and the files whose names are none of the 37 classes."""

    files: dict[Trial, list[FoundFile]]
    unknown_actions: list[str]


def _scan(root: str, pattern: re.Pattern, extension: str, video: bool) -> Scan:
    files: dict[Trial, list[FoundFile]] = {}
    unknown: list[str] = []
    for directory, _, names in sorted(os.walk(root)):
        match = pattern.search(directory.replace(os.sep, "/"))
        if not match:
            continue
        numbers = [int(group) for group in match.groups()]
        subject, camera, scene, session = numbers if video else (numbers[0], None, *numbers[1:])
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() != extension:
                continue
            action = action_class(stem, scene)
            if action is None:
                unknown.append(os.path.join(directory, name))
                continue
            trial = Trial(subject, scene, session, action)
            files.setdefault(trial, []).append(FoundFile(trial, os.path.join(directory, name), camera))
    return Scan(files, unknown)


def scan_sensor_stream(root: str, stream: str) -> Scan:
    """Every CSV of one stream; a trial can list several files when names differ only in case."""
    return _scan(os.path.join(root, stream), _TRIAL_DIRS, ".csv", video=False)


def scan_videos(video_root: str) -> Scan:
    """Every clip of the release's video folders, by trial and camera."""
    return _scan(video_root, _VIDEO_DIRS, ".mp4", video=True)


def find_video_root(root: str, name: str | None = None) -> str:
    """The folder of the trimmed clips: `name` if given, else the first known name that exists."""
    candidates = [name] if name else ["RGB", "Video_trimmed", "trimmed", "video", "videos"]
    for candidate in candidates:
        path = os.path.join(root, candidate)
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(f"{root}: no video folder among {candidates}; pass the folder's name explicitly")


def iter_trials(scans: list[Scan]) -> Iterator[Trial]:
    """Every trial any scan saw, in a stable order."""
    yield from sorted(set().union(*(scan.files for scan in scans)))
