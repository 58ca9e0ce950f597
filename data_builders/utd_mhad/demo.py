"""The UTD-MHAD demo's data: a generated release, tiny-model embeddings and the built 'utd_mhad' dataset, made once.

harjax.main calls prepare() for configs/full.py:utd_mhad (and the paper suite's ':utd_mhad' variant), so the whole
path of a video + wearable dataset other than MMAct (release layout -> manifest -> extractor -> recordings builder
-> training) runs on a fresh machine. Given a data_dir where the real release was built
(data_builders/utd_mhad/build.py), it reads that and generates nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from data_builders import demo_data
from data_builders.mmact import synthetic_tree as mmact_tree
from data_builders.recordings import extract_embeddings
from data_builders.utd_mhad import build, layout, synthetic_tree
from harjax import errors
from harjax.video import families

# Every one has UTD-MHAD's 27 actions and 8 subjects (so loso_s1 .. loso_s8 exist) and two sequences lacking a file.
TREES = {
    "demo": synthetic_tree.TreeSpec(subjects=tuple(range(1, 9)), trials=(1, 2), clip_frames=60, frame_size=(48, 32)),
    "tiny": synthetic_tree.TreeSpec(subjects=tuple(range(1, 9)), trials=(1,), clip_frames=30, frame_size=(48, 32)),
}


def prepare(data_dir: str, prompt_set: str = "context", embedding: str = "video_mean_last", tree: str = "demo") -> str:
    """Builds the '<prompt_set>-<embedding>' utd_mhad dataset under data_dir unless it is there; returns data_dir."""
    if tree not in TREES:
        raise ValueError(f"config.data.demo_tree must be one of {sorted(TREES)}, got {tree!r}")
    if prompt_set == "learned":
        raise errors.ConfigError(
            "the UTD-MHAD demo extracts the plain and context prompts; learn a prompt with python -m "
            "data_builders.prompt_tuning --manifest=<data_dir>/manifest.jsonl, extract with --prompt_set=learned "
            "and build learned_<protocol> (docs/workflows/learned_prompts.md)"
        )
    tfds_config = f"{prompt_set}-{embedding}"
    with demo_data.exclusive(data_dir):
        if demo_data.is_built(data_dir, build.NAME, tfds_config):
            logging.info("utd_mhad dataset %s already built in %s", tfds_config, data_dir)
            return data_dir
        release = os.path.join(data_dir, "manual")
        if os.path.isdir(os.path.join(data_dir, build.NAME)) and not mmact_tree.is_ours(release):
            raise errors.UserError(
                f"{data_dir} holds a utd_mhad dataset without the config {tfds_config!r}: build it from the release "
                f"(python -m data_builders.utd_mhad.build ... --prompt_set={prompt_set} --embedding={embedding}; "
                "see docs/workflows/utd_mhad.md)"
            )
        demo_data.generated_release(release, lambda root: synthetic_tree.write_tree(root, TREES[tree]))
        manifest_path = os.path.join(data_dir, "manifest.jsonl")
        if not os.path.exists(manifest_path):
            layout.write_manifest(release, manifest_path)
        model_dir = demo_data.tiny_model_dir(data_dir, families.words(layout.CONTEXTS.values()))
        embeddings_dir = os.path.join(data_dir, "embeddings")
        summary = extract_embeddings.extract(manifest_path, embeddings_dir, model_dir, prompt_set, batch_size=16)
        logging.info(
            "utd_mhad demo: extracted %d clips (%d already done), %d could not be read",
            summary["extracted"],
            summary["skipped_done"],
            len(summary["failed"]),
        )
        directory, report = build.build(manifest_path, data_dir, embeddings_dir, prompt_set, embedding=embedding)
        skipped = {reason: len(rows) for reason, rows in report["skipped"].items()}
        logging.info("utd_mhad demo: built %s: %d examples, skipped %s", directory, report["examples"], skipped)
    return data_dir


def from_config(data: Any) -> str:
    """The entry of the demo registry (harjax/data/demos.py): config.data's dataset, built unless it is there."""
    return prepare(data.data_dir, data.prompt_set, data.embedding, data.demo_tree)
