"""Generated "own recordings" in the manifest layout: clips and sensor CSVs on their own clocks, with defects.

For tests, the build benchmark and trying the recordings path without data. Each row is a clip (the bright square
of data_builders/mmact/synthetic_tree.py moving at a class-specific speed) and two sensor streams that oscillate at
a class-specific frequency:
  wrist   about 100 Hz, stamped in epoch milliseconds (column 't_ms'), starting before the clip and ending after it
  phone   50 Hz, stamped in seconds since the phone's own start (column 'time'), another clock
Each stream's offset_s in the manifest puts it on the clip's clock. The defects it writes, each listed in the returned
summary by row id: duplicated and out-of-order timestamps, a clock jump back, a gap, a stream that covers too little
of its clip, and a missing sensor file.

    python -m data_builders.recordings.synthetic --output_dir=DIR [--subjects=4 --trials=2]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np
from absl import flags

from data_builders.mmact import synthetic_tree
from harjax.recordings import manifest

CLASSES = ("drinking", "typing", "walking", "waving")
CONTEXTS = ("The person is in a kitchen. ", "The person is at a desk in an office. ")
MANIFEST = "manifest.jsonl"
WRIST_EPOCH_MS = 1_700_000_000_000.0  # the wrist sensor's clock reading at its first sample


@dataclasses.dataclass(frozen=True)
class RecordingsSpec:
    subjects: int = 4  # subjects 1..n; the first half train, the rest test
    trials: int = 2  # per class and subject
    classes: tuple[str, ...] = CLASSES
    clip_seconds: float = 2.0
    fps: float = 10.0
    frame_size: tuple[int, int] = (64, 48)
    defects: bool = True
    seed: int = 0


def _signal(class_index: int, time: np.ndarray, rng: np.random.Generator, channels: int) -> np.ndarray:
    frequency = 0.8 + 0.6 * class_index  # Hz: separable classes
    phases = np.arange(channels) * np.pi / 3
    return np.sin(2 * np.pi * frequency * time[:, None] + phases) + 0.1 * rng.normal(size=(len(time), channels))


def _write_csv(path: str, header: list[str], rows: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(f"{value:.6f}" for value in row) + "\n" for row in rows)


def write_recordings(root: str, spec: RecordingsSpec = RecordingsSpec()) -> dict[str, Any]:
    """Writes clips, sensor files and root/manifest.jsonl; returns {'manifest': path, 'defects': {kind: [ids]}}."""
    rng = np.random.default_rng(spec.seed)
    os.makedirs(os.path.join(root, "clips"), exist_ok=True)
    os.makedirs(os.path.join(root, "sensors"), exist_ok=True)
    rows, defects = (
        [],
        {
            "duplicates_and_out_of_order": [],
            "clock_jump": [],
            "gap": [],
            "low_coverage": [],
            "missing_file": [],
        },
    )
    number = 0
    for subject in range(1, spec.subjects + 1):
        for class_index, label in enumerate(spec.classes):
            for trial in range(spec.trials):
                identifier = f"s{subject}_{label}_t{trial}"
                clip = os.path.join("clips", identifier + ".mp4")
                frames = int(round(spec.clip_seconds * spec.fps))
                synthetic_tree.write_clip(os.path.join(root, clip), class_index, rng, frames, spec.frame_size, spec.fps)
                lead = rng.uniform(0.2, 0.6)  # the sensors started this long before the clip
                wrist_time = np.arange(-lead, spec.clip_seconds + 0.5, 0.01) + rng.uniform(-0.002, 0.002)
                phone_start = rng.uniform(100, 200)  # the phone's clock reading at the clip's start
                phone_time = np.arange(-lead, spec.clip_seconds + 0.5, 0.02)
                kind = list(defects)[number % len(defects)] if spec.defects and number < 2 * len(defects) else None
                if kind == "low_coverage":
                    phone_time = phone_time[phone_time > 0.4 * spec.clip_seconds]
                wrist = _signal(class_index, wrist_time, rng, 3)
                phone = _signal(class_index, phone_time, rng, 3)
                wrist_stamps = WRIST_EPOCH_MS + (wrist_time + lead) * 1e3
                if kind == "duplicates_and_out_of_order":
                    wrist_stamps[20] = wrist_stamps[19]
                    wrist_stamps[[40, 41]] = wrist_stamps[[41, 40]]
                if kind == "clock_jump":  # the wrist clock is set back by 0.5 s two thirds through
                    wrist_stamps[2 * len(wrist_stamps) // 3 :] -= 500.0
                if kind == "gap":
                    keep = (wrist_time < 0.8) | (wrist_time > 0.92)  # 120 ms: masked (max_gap_periods 5 = 50 ms)
                    wrist_stamps, wrist = wrist_stamps[keep], wrist[keep]
                wrist_path = os.path.join("sensors", identifier + "_wrist.csv")
                phone_path = os.path.join("sensors", identifier + "_phone.csv")
                _write_csv(
                    os.path.join(root, wrist_path), ["t_ms", "x", "y", "z"], np.column_stack([wrist_stamps, wrist])
                )
                if kind != "missing_file":
                    _write_csv(
                        os.path.join(root, phone_path),
                        ["time", "x", "y", "z"],
                        np.column_stack([phone_time + phone_start, phone]),
                    )
                if kind:
                    defects[kind].append(identifier)
                rows.append(
                    {
                        "id": identifier,
                        "clip": clip,
                        "sensors": {
                            "wrist": {
                                "path": wrist_path,
                                "time_column": "t_ms",
                                "time_unit": "ms",
                                "offset_s": WRIST_EPOCH_MS / 1e3 + lead,
                            },
                            "phone": {"path": phone_path, "offset_s": phone_start},
                        },
                        "label": label,
                        "subject": subject,
                        "session": trial,
                        "split": "train" if subject <= spec.subjects // 2 else "test",
                        "context": CONTEXTS[class_index % len(CONTEXTS)],
                        "room": f"room{1 + subject % 2}",
                    }
                )
                number += 1
    path = os.path.join(root, MANIFEST)
    manifest.write(path, rows)
    return {"manifest": path, "defects": defects}


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the tests, benchmarks/recordings_build.py) have flags of these names, and absl's flags are
    process-wide.
    """
    flags.DEFINE_string("output_dir", None, "where the recordings and their manifest go", required=True)
    flags.DEFINE_integer("subjects", RecordingsSpec.subjects, "subjects, each recording every class --trials times")
    flags.DEFINE_integer("trials", RecordingsSpec.trials, "recordings per subject and class")


def main(argv: list[str]) -> None:
    """Writes a set of recordings from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    written = write_recordings(args.output_dir, RecordingsSpec(subjects=args.subjects, trials=args.trials))
    print(f"wrote {written['manifest']}; defects: {json.dumps(written['defects'])}")


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
