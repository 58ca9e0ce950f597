"""Time and throughput of the recordings path on a generated set: extraction with the tiny model, then the build.

    python benchmarks/recordings_build.py [--subjects=25 --trials=10]     # 25 x 4 classes x 10 = 1,000 recordings

Writes a generated set of own recordings (data_builders/recordings/synthetic.py: 2 s clips at 10 fps, 64x48, and
two sensor CSVs per row on their own clocks; the defects only in its first rows) to a scratch folder, then times:
extraction of every clip with the tiny Video-LLaVA on the CPU (one process), the build with video, and a
sensors-only build. Prints a line per stage and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from data_builders.recordings import build, extract_embeddings, synthetic
from harjax import cli  # noqa: E402
from harjax.video import families, tiny_models

flags.DEFINE_integer("subjects", 25, "subjects of the generated set (each 4 classes x --trials recordings)")
flags.DEFINE_integer("trials", 10, "recordings per subject and class")
flags.DEFINE_integer("batch_size", 16, "clips per forward of the extraction")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # the flags' values
    with tempfile.TemporaryDirectory() as scratch:
        written = synthetic.write_recordings(
            os.path.join(scratch, "tree"), synthetic.RecordingsSpec(subjects=args.subjects, trials=args.trials)
        )
        rows = sum(1 for _ in open(written["manifest"]))
        words = families.words(synthetic.CONTEXTS)
        model = tiny_models.save_tiny_model(os.path.join(scratch, "model"), extra_words=words)
        seconds = {}
        started = time.perf_counter()
        extract_embeddings.extract(
            written["manifest"], os.path.join(scratch, "emb"), model, "context", batch_size=args.batch_size
        )
        seconds["extraction"] = time.perf_counter() - started
        for stage, embeddings in (("build_with_video", os.path.join(scratch, "emb")), ("build_sensors_only", None)):
            started = time.perf_counter()
            _, report = build.build(
                written["manifest"], os.path.join(scratch, "data"), embeddings, leave_subjects_out=True
            )
            seconds[stage] = time.perf_counter() - started
        for stage, spent in seconds.items():
            print(f"{stage:<20} {spent:7.1f} s  {rows / spent:7.1f} recordings/s", flush=True)
    print(
        json.dumps(
            {
                "benchmark": "recordings_build",
                "recordings": rows,
                "examples_built": report["examples"],
                "protocols": len(report["protocols"]),
                "seconds": seconds,
                "recordings_per_s": {stage: rows / spent for stage, spent in seconds.items()},
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
