"""Writes a small synthetic MMAct release in the real layout, with the real release's defects, for tests and demos.

Both modalities carry the class: sensors oscillate at a class-specific frequency, and each clip shows a bright
square whose speed and height depend on the class. Defects (see ../shared/notes/mmact.md), each recorded in the
returned manifest so tests can check that a builder repairs or counts every one of them:
  rates 100/100/50/~50 Hz (orientation jittered); timestamps on whole seconds written without a fraction;
  shuffled and duplicated rows; a missing sensor file; an empty sensor file; an action file name in another
  case, once next to a lowercase copy; scene-3 using_phone / talking_on_phone files (the *_desk classes); a
  missing camera view; an undecodable clip.

    python -m data_builders.mmact.synthetic_tree --output_dir=DIR [--subjects=1,2,17 --sessions=1,5 ...]
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from typing import Any

import numpy as np
from absl import flags

from data_builders.mmact import layout

SENSOR_RATES_HZ = {"acc_phone_clip": 100.0, "acc_watch_clip": 100.0, "gyro_clip": 50.0, "orientation_clip": 50.0}
VIDEO_ROOT = "RGB"
MANIFEST = "synthetic_manifest.json"  # written last: a tree that has it is whole
STARTED = ".synthetic_tree_started"  # written first: a tree that has it but no manifest is one of ours, unfinished


def is_ours(root: str) -> bool:
    """Whether `root` holds a synthetic tree harjax wrote (whole or unfinished), which it may write over."""
    return any(os.path.exists(os.path.join(root, name)) for name in (MANIFEST, STARTED))


# What the release's file names are: scene 3's phone classes keep their plain names on disk.
_DESK_FILE_NAMES = {"using_phone_desk": "using_phone", "talking_on_phone_desk": "talking_on_phone"}
_SCENE3_ACTIONS = ("using_phone_desk", "talking_on_phone_desk", "drinking", "sitting_down", "using_pc")
_OTHER_ACTIONS = ("walking", "carrying_light", "fall", "waving_hand", "running")


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    subjects: tuple[int, ...] = (1, 2, 17)
    scenes: tuple[int, ...] = (1, 2, 3)
    sessions: tuple[int, ...] = (1, 5)
    actions_per_scene: int = 3
    cameras: tuple[int, ...] = layout.CAMERAS
    clip_frames: int = 16
    frame_size: tuple[int, int] = (64, 48)  # width, height
    fps: float = 29.97
    gop_size: int | None = None  # frames per keyframe interval of the clips (None: libx264's default, 250)
    seed: int = 0


def scene_actions(scene: int, count: int) -> tuple[str, ...]:
    """Classes recorded in a scene, the desk classes in scene 3 (always including both phone renames)."""
    return (_SCENE3_ACTIONS if scene == layout.DESK_SCENE else _OTHER_ACTIONS)[:count]


def _timestamp(moment: datetime.datetime) -> str:
    """The release's format; like the real writer it drops a zero fraction."""
    text = moment.strftime("%Y%m%d_%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "")


def _sensor_rows(
    stream: str, class_index: int, start: datetime.datetime, seconds: float, rng: np.random.Generator
) -> list[str]:
    rate = SENSOR_RATES_HZ[stream]
    times = np.arange(int(seconds * rate)) / rate
    if stream == "orientation_clip":  # about 50 Hz, irregular
        times = np.sort(times + rng.uniform(-0.004, 0.004, len(times)))
        times[0] = 0.0
    frequency = 0.5 + 0.35 * class_index  # Hz: separable classes
    signal = np.sin(2 * np.pi * frequency * times[:, None] + np.arange(3) * np.pi / 3)  # [n, 3]
    scale = {"acc_phone_clip": 3.0, "acc_watch_clip": 5.0, "gyro_clip": 1.5, "orientation_clip": 40.0}[stream]
    values = scale * signal + 0.1 * rng.normal(size=signal.shape)
    if stream.startswith("acc"):
        values[:, 2] += 9.8  # gravity
    rows = []
    for t, row in zip(times, values, strict=True):
        moment = start + datetime.timedelta(microseconds=int(round(t * 1e6)))
        rows.append(f"{_timestamp(moment)},{row[0]:.6f},{row[1]:.6f},{row[2]:.6f}\n")
    return rows


def write_clip(
    path: str,
    class_index: int,
    rng: np.random.Generator,
    frames: int = 16,
    size: tuple[int, int] = (64, 48),
    fps: float = 29.97,
    codec: str = "libx264",
    gop_size: int | None = None,
) -> None:
    """A clip whose bright square moves at a class-specific speed (frames of `size` = width, height).

    gop_size: frames from one keyframe to the next (None: the codec's default).
    """
    import av  # the builder's extra; training never imports this module

    width, height = size
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop_size:
            stream.codec_context.gop_size = gop_size
        speed = 1.5 + 1.2 * class_index  # pixels per frame
        row = int((class_index * 7) % (height - 12))
        for index in range(frames):
            frame = np.full((height, width, 3), 30, np.uint8)
            frame += rng.integers(0, 10, frame.shape, dtype=np.uint8)
            column = int(index * speed) % (width - 10)
            frame[row : row + 10, column : column + 10] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_tree(root: str, spec: TreeSpec = TreeSpec()) -> dict[str, Any]:
    """Writes the tree under `root`; returns (and saves as synthetic_manifest.json) what it wrote and broke."""
    os.makedirs(root, exist_ok=True)
    open(os.path.join(root, STARTED), "w").close()
    rng = np.random.default_rng(spec.seed)
    trials = [
        layout.Trial(subject, scene, session, action)
        for subject in spec.subjects
        for scene in spec.scenes
        for session in spec.sessions
        for action in scene_actions(scene, spec.actions_per_scene)
    ]
    if len(trials) < 6:
        raise ValueError(f"a synthetic tree needs at least 6 trials to hold every defect; {spec} gives {len(trials)}")
    quirks = {
        "missing_sensor_file": [],
        "empty_sensor_file": [],
        "unsorted_file": [],
        "duplicate_rows": 0,
        "case_variant": [],
        "duplicate_case_file": 0,
        "missing_camera": [],
        "undecodable_clip": [],
    }
    # Defects go to fixed trials of the non-desk scenes, so scene 3's renames stay separate to check.
    plain = [trial for trial in trials if trial.scene != layout.DESK_SCENE]
    broken = {
        "missing_sensor_file": plain[0],
        "empty_sensor_file": plain[1],
        "unsorted_file": plain[2],
        "case_variant": plain[3],
        "missing_camera": plain[4],
        "undecodable_clip": plain[5],
    }
    start = datetime.datetime(2018, 10, 16, 13, 0, 0)
    for number, trial in enumerate(trials):
        class_index = layout.CLASSES.index(trial.action)
        file_stem = _DESK_FILE_NAMES.get(trial.action, trial.action)
        if trial == broken["case_variant"]:
            file_stem = file_stem.capitalize()
            quirks["case_variant"].append(trial.key)
        moment = start + datetime.timedelta(minutes=number)
        seconds = float(rng.uniform(2.0, 4.0))
        for stream in layout.SENSOR_STREAMS:
            directory = os.path.join(
                root, stream, f"subject{trial.subject}", f"scene{trial.scene}", f"session{trial.session}"
            )
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{file_stem}.csv")
            if trial == broken["missing_sensor_file"] and stream == "gyro_clip":
                quirks["missing_sensor_file"].append(path)
                continue
            rows = _sensor_rows(stream, class_index, moment, seconds, rng)
            if trial == broken["empty_sensor_file"] and stream == "orientation_clip":
                rows = []
                quirks["empty_sensor_file"].append(path)
            if trial == broken["unsorted_file"] and stream == "acc_watch_clip":
                rows[10:20] = rows[10:20][::-1]
                rows[30:30] = rows[25:28]  # three duplicated rows
                quirks["unsorted_file"].append(path)
                quirks["duplicate_rows"] += 3
            with open(path, "w") as f:
                f.writelines(rows)
            if trial == broken["case_variant"] and stream == "acc_phone_clip":  # the release has such pairs
                with open(os.path.join(directory, f"{file_stem.lower()}.csv"), "w") as f:
                    f.writelines(rows[: len(rows) // 2])  # a shorter copy under the lowercase name
                quirks["duplicate_case_file"] = 1
        for camera in spec.cameras:
            directory = os.path.join(
                root,
                VIDEO_ROOT,
                f"subject{trial.subject}",
                f"cam{camera}",
                f"scene{trial.scene}",
                f"session{trial.session}",
            )
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{file_stem}.mp4")
            if trial == broken["missing_camera"] and camera == spec.cameras[-1]:
                quirks["missing_camera"].append(path)
                continue
            if trial == broken["undecodable_clip"] and camera == spec.cameras[0]:
                with open(path, "wb") as f:
                    f.write(b"\x00\x00\x00\x18ftypmp42 truncated, not a video")
                quirks["undecodable_clip"].append(path)
                continue
            write_clip(path, class_index, rng, spec.clip_frames, spec.frame_size, spec.fps, gop_size=spec.gop_size)
    manifest = json.loads(
        json.dumps({"spec": dataclasses.asdict(spec), "trials": [trial.key for trial in trials], "quirks": quirks})
    )  # as it reads back from the file
    with open(os.path.join(root, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the demos, data_builders/utd_mhad/synthetic_tree.py, the benchmarks) have flags of these names,
    and absl's flags are process-wide.
    """
    flags.DEFINE_string("output_dir", None, "where the release goes", required=True)
    defaults = TreeSpec()
    for name, meaning in (("subjects", "subject"), ("scenes", "scene"), ("sessions", "session")):
        flags.DEFINE_list(
            name, [str(number) for number in getattr(defaults, name)], f"{meaning} numbers, comma-separated"
        )
        flags.register_validator(
            name,
            lambda values: bool(values) and all(value.strip().isdigit() for value in values),
            f"--{name}: expected comma-separated numbers",
        )
    flags.DEFINE_integer("actions_per_scene", defaults.actions_per_scene, "actions recorded in each scene")
    flags.DEFINE_integer("seed", defaults.seed, "the generator's seed")


def main(argv: list[str]) -> None:
    """Writes a synthetic release from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    numbers = {name: tuple(int(value) for value in args[name].value) for name in ("subjects", "scenes", "sessions")}
    manifest = write_tree(
        args.output_dir, TreeSpec(**numbers, actions_per_scene=args.actions_per_scene, seed=args.seed)
    )
    print(f"wrote {len(manifest['trials'])} trials to {args.output_dir}")


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
