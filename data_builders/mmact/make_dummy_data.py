"""Regenerates dummy_data/: a small synthetic MMAct tree with its defects, plus tiny-model embeddings.

    python -m data_builders.mmact.make_dummy_data [--output_dir=data_builders/mmact/dummy_data]

The builder test builds the 'context-video_mean_last-frames' config from it; embeddings sit in
<manual_dir>/embeddings.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

from absl import flags

from data_builders.mmact import extract_embeddings, prompts, synthetic_tree
from harjax import errors
from harjax.video import tiny_models

DUMMY_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
SPEC = synthetic_tree.TreeSpec(
    subjects=(1, 17), scenes=(1, 2, 3), sessions=(1, 5), actions_per_scene=2, clip_frames=8, frame_size=(48, 32)
)
PROMPT_SET = "context"
TFDS_CONFIG = "context-video_mean_last-frames"  # what the tests build: the context prompts, frames stored too


def make_dummy_data(output_dir: str = DUMMY_DATA) -> None:
    """Writes the builder test's small release, replacing an earlier one at `output_dir` (and nothing else)."""
    if os.path.exists(output_dir):
        if not synthetic_tree.is_ours(output_dir):
            raise errors.UserError(
                f"--output_dir={output_dir} exists and is not a synthetic tree harjax wrote; choose a new one"
            )
        shutil.rmtree(output_dir)
    synthetic_tree.write_tree(output_dir, SPEC)
    with tempfile.TemporaryDirectory() as model_dir:
        tiny_models.save_tiny_model(model_dir, extra_words=prompts.vocabulary())
        extract_embeddings.extract(
            output_dir, os.path.join(output_dir, "embeddings"), model_dir, PROMPT_SET, batch_size=8, device="cpu"
        )


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the tests, the MMAct demo that harjax.main runs) may have flags of these names, and absl's
    flags are process-wide.
    """
    flags.DEFINE_string("output_dir", DUMMY_DATA, "where the dummy data goes (an earlier one there is replaced)")


def main(argv: list[str]) -> None:
    """Writes the dummy data from the command line (define_flags first)."""
    del argv
    make_dummy_data(flags.FLAGS.output_dir)


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
