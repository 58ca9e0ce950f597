"""A generated UTD-MHAD tree in the release's layout: RGB .avi clips and inertial .mat files, some sequences lacking.

For tests and the paper suite's ':utd_mhad' variant without the release. The clips show data_builders/mmact's
moving square (speed by action) and the inertial signal oscillates at an action-specific frequency, at 50 Hz for the
clip's length (written with scipy, as 'd_iner' [T, 6]). Which sequences lack which file is returned, so tests can
check that the scan finds exactly those.

    python -m data_builders.utd_mhad.synthetic_tree --output_dir=DIR
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
from data_builders.utd_mhad import layout


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    actions: tuple[int, ...] = tuple(range(1, 28))
    subjects: tuple[int, ...] = (1, 2, 3, 4)
    trials: tuple[int, ...] = (1, 2)
    clip_frames: int = 30  # 1 s at 30 fps, as the Kinect recorded
    frame_size: tuple[int, int] = (64, 48)
    lacking: tuple[tuple[str, str], ...] = (("a8_s1_t2", "inertial"), ("a23_s2_t1", "rgb"))
    seed: int = 0


def write_tree(root: str, spec: TreeSpec = TreeSpec()) -> dict[str, Any]:
    """Writes root/RGB and root/Inertial; returns {'sequences': [ids written whole], 'lacking': [(id, modality)]}.

    Marked as mmact's synthetic trees are (synthetic_tree.is_ours): STARTED first, what it wrote in MANIFEST last.
    """
    import scipy.io

    os.makedirs(root, exist_ok=True)
    open(os.path.join(root, synthetic_tree.STARTED), "w").close()
    rng = np.random.default_rng(spec.seed)
    for folder in ("RGB", "Inertial"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    lacking = dict(spec.lacking)
    whole = []
    seconds = spec.clip_frames / 30.0
    for action in spec.actions:
        for subject in spec.subjects:
            for trial in spec.trials:
                name = f"a{action}_s{subject}_t{trial}"
                if lacking.get(name) != "rgb":
                    synthetic_tree.write_clip(
                        os.path.join(root, "RGB", f"{name}_color.avi"),
                        action - 1,
                        rng,
                        spec.clip_frames,
                        spec.frame_size,
                        30.0,
                        codec="mpeg4",
                    )
                if lacking.get(name) != "inertial":
                    time = np.arange(int(seconds * layout.RATE_HZ)) / layout.RATE_HZ
                    frequency = 0.5 + 0.25 * action  # Hz
                    signal = np.sin(2 * np.pi * frequency * time[:, None] + np.arange(6) * np.pi / 6)
                    signal += 0.1 * subject * rng.normal(size=signal.shape)
                    scipy.io.savemat(os.path.join(root, "Inertial", f"{name}_inertial.mat"), {"d_iner": signal})
                if name not in lacking:
                    whole.append(name)
    written = {"sequences": whole, "lacking": sorted(lacking.items())}
    with open(os.path.join(root, synthetic_tree.MANIFEST), "w") as f:
        json.dump({"spec": dataclasses.asdict(spec), **written}, f, indent=1)
    return written


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the UTD-MHAD demo, which harjax.main runs) have flags of these names, and absl's flags are
    process-wide.
    """
    flags.DEFINE_string("output_dir", None, "where the tree goes (RGB/ and Inertial/)", required=True)


def main(argv: list[str]) -> None:
    """Writes a tree from the command line (define_flags first)."""
    del argv
    written = write_tree(flags.FLAGS.output_dir)
    print(f"wrote {len(written['sequences'])} sequences; lacking: {written['lacking']}")


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
