"""UTD-MHAD's release layout as a recordings manifest, with the sequences a release lacks found by scanning it.

    python -m data_builders.utd_mhad.layout --release_dir=R --output=M.jsonl

The release (../shared/notes/datasets.md): one folder per modality, files named by action, subject and trial,
    <release>/RGB/a{action}_s{subject}_t{trial}_color.avi           Kinect v1, 640x480, 30 fps
    <release>/Inertial/a{action}_s{subject}_t{trial}_inertial.mat   'd_iner' [T, 6]: acc x, y, z (g), gyro x, y, z
                                                                    (deg/s), 50 Hz, no timestamps
(the folders are found wherever they are unpacked below the release folder). A clip and its inertial file start
together, so the sensor's offset is 0 and its rate fixed. The wearable is on the right wrist for actions 1-21 and on
the right thigh for 22-27: each group has its own context sentence, and the placement is a grouping column.
Every expected sequence gets a row: one whose clip or inertial file the release lacks names the file where it would
be, so extraction lists it as a failure and the build report lists it as a missing file, by sequence.
Protocols: cross_subject (odd subjects train, even test: the standard split, the manifest's 'split') and, built with
--leave_subjects_out, one fold per subject.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
from typing import Any

from absl import flags

from harjax import cli
from harjax.recordings import manifest

ACTIONS = (
    "right_arm_swipe_to_the_left",
    "right_arm_swipe_to_the_right",
    "right_hand_wave",
    "two_hand_front_clap",
    "right_arm_throw",
    "cross_arms_in_the_chest",
    "basketball_shoot",
    "right_hand_draw_x",
    "right_hand_draw_circle_clockwise",
    "right_hand_draw_circle_counter_clockwise",
    "draw_triangle",
    "bowling_right_hand",
    "front_boxing",
    "baseball_swing_from_right",
    "tennis_right_hand_forehand_swing",
    "arm_curl_two_arms",
    "tennis_serve",
    "two_hand_push",
    "right_hand_knock_on_door",
    "right_hand_catch_an_object",
    "right_hand_pick_up_and_throw",
    "jogging_in_place",
    "walking_in_place",
    "sit_to_stand",
    "stand_to_sit",
    "forward_lunge_left_foot_forward",
    "squat_two_arms_stretch_out",
)  # action k is ACTIONS[k - 1]
THIGH_ACTIONS = range(22, 28)
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
RATE_HZ = 50.0
CONTEXTS = {
    "wrist": "The person stands facing the camera and wears a sensor on the right wrist. ",
    "thigh": "The person stands facing the camera and wears a sensor on the right thigh. ",
}
TEST_SUBJECTS_PARITY = 0  # cross_subject: even subjects test
_NAME = re.compile(r"^a(\d+)_s(\d+)_t(\d+)_(color\.avi|inertial\.mat)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Scan:
    """Every sequence a release should hold with its files' paths, and the sequences lacking one (by modality)."""

    sequences: dict[tuple[int, int, int], dict[str, str]]  # every expected one -> {'rgb', 'inertial'}: path
    missing: list[dict[str, Any]]  # {'sequence', 'missing': [modalities]}
    unknown_files: list[str]


def placement(action: int) -> str:
    """Where the wearable was worn for an action (1-27)."""
    return "thigh" if action in THIGH_ACTIONS else "wrist"


def scan(release_dir: str) -> Scan:
    """Every sequence of the tree; a sequence is expected when its action, subject and trial each occur somewhere.

    So a full release expects 27 x 8 x 4 = 864 and lists the ones it lacks (three in the public release), never
    from a hard-coded list.
    """
    if not os.path.isdir(release_dir):
        raise manifest.ManifestError(f"{release_dir}: no such UTD-MHAD release folder")
    found: dict[tuple[int, int, int], dict[str, str]] = {}
    unknown = []
    for directory, _, names in sorted(os.walk(release_dir)):
        for name in sorted(names):
            match = _NAME.match(name)
            if not match:
                if name.lower().endswith((".avi", ".mat")):
                    unknown.append(os.path.join(directory, name))
                continue
            action, subject, trial = (int(group) for group in match.groups()[:3])
            if not 1 <= action <= len(ACTIONS):
                unknown.append(os.path.join(directory, name))
                continue
            kind = "rgb" if match.group(4).lower() == "color.avi" else "inertial"
            found.setdefault((action, subject, trial), {})[kind] = os.path.join(directory, name)
    if not found:
        raise manifest.ManifestError(f"{release_dir}: no a<N>_s<N>_t<N>_color.avi or _inertial.mat file below it")
    actions, subjects, trials = (sorted({key[axis] for key in found}) for axis in range(3))
    folders = {}  # where each modality's files are (a lacking file is named there)
    for kind, default in (("rgb", "RGB"), ("inertial", "Inertial")):
        seen = collections.Counter(os.path.dirname(files[kind]) for files in found.values() if kind in files)
        folders[kind] = seen.most_common(1)[0][0] if seen else os.path.join(release_dir, default)
    sequences, missing = {}, []
    for key in ((a, s, t) for a in actions for s in subjects for t in trials):
        files = found.get(key, {})
        lacking = [kind for kind in ("rgb", "inertial") if kind not in files]
        if lacking:
            missing.append({"sequence": "a{}_s{}_t{}".format(*key), "missing": lacking})
        sequences[key] = {
            kind: files.get(kind, os.path.join(folders[kind], "a{}_s{}_t{}_".format(*key) + suffix))
            for kind, suffix in (("rgb", "color.avi"), ("inertial", "inertial.mat"))
        }
    return Scan(sequences, missing, unknown)


def manifest_rows(found: Scan) -> list[dict[str, Any]]:
    """One manifest row per expected sequence (paths absolute, so the manifest can live anywhere)."""
    rows = []
    for (action, subject, trial), files in found.sequences.items():
        where = placement(action)
        rows.append(
            {
                "id": f"a{action}_s{subject}_t{trial}",
                "clip": os.path.abspath(files["rgb"]),
                "sensors": {
                    "inertial": {"path": os.path.abspath(files["inertial"]), "rate_hz": RATE_HZ, "channels": CHANNELS}
                },
                "label": ACTIONS[action - 1],
                "subject": subject,
                "session": trial,
                "split": "test" if subject % 2 == TEST_SUBJECTS_PARITY else "train",
                "context": CONTEXTS[where],
                "placement": where,
            }
        )
    return rows


def write_manifest(release_dir: str, path: str) -> Scan:
    """Scans the release and writes its manifest (JSON lines) to `path`; returns the scan (its missing sequences)."""
    found = scan(release_dir)
    manifest.write(path, manifest_rows(found))
    return found


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the UTD-MHAD build and demo, which harjax.main runs) have flags of these names, and absl's
    flags are process-wide.
    """
    flags.DEFINE_string("release_dir", None, "the unpacked release (RGB and Inertial below it)", required=True)
    flags.DEFINE_string("output", None, "the manifest to write (.jsonl)", required=True)


def main(argv: list[str]) -> None:
    """Writes the manifest of a release from the command line and lists what it lacks (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    found = write_manifest(args.release_dir, args.output)
    print(f"wrote {args.output}: {len(found.sequences)} sequences, {len(found.missing)} lacking a file")
    for entry in found.missing:
        print(f"  {entry['sequence']}: no {' and no '.join(entry['missing'])} file")
    for path in found.unknown_files:
        print(f"  not a UTD-MHAD name, ignored: {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
