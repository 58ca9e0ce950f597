"""The demo's data: a synthetic MMAct tree, tiny-model embeddings and the built TFDS dataset, made once.

harjax.main calls prepare() for configs/full.py:demo (and the experiment suites' :demo and :smoke variants), so
the whole real path (release layout -> extractor -> TFDS builder -> grain pipeline -> training) runs on a fresh
machine without MMAct or a GPU. Each prompt set is extracted, and each '<prompt_set>-<embedding>' dataset built,
the first time a run asks for it; runs that share a data_dir (a suite's runs) take turns through a file lock.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from data_builders import demo_data, prompt_tuning
from data_builders.mmact import build, extract_embeddings, make_dummy_data, prompts, synthetic_tree
from harjax.data import tfds_format

# The tiny model learns a soft prompt in seconds; the settings show the path, not a tuned result.
DEMO_PROMPT_TUNING = {"num_tokens": 4, "batch_size": 8, "learning_rate": 3e-2}
DEMO_PROMPT_STEPS = 60
# 'demo': 480 trials over 8 subjects, every scene, 3 sessions; 'tiny': the 24 trials of dummy_data/ (tests).
TREES = {
    "demo": synthetic_tree.TreeSpec(
        subjects=(1, 2, 3, 4, 5, 6, 17, 18),
        scenes=(1, 2, 3, 4),
        sessions=(1, 2, 5),
        actions_per_scene=5,
        clip_frames=8,
        frame_size=(48, 32),
    ),
    "tiny": make_dummy_data.SPEC,
}


def prepare(
    data_dir: str,
    prompt_set: str = "context",
    embedding: str = "video_mean_last",
    tree: str = "demo",
    protocol: str = "cross_subject",
) -> str:
    """Builds the '<prompt_set>-<embedding>' demo dataset under data_dir unless it is there; returns data_dir.

    prompt_set 'learned' first learns a soft prompt on the protocol's training split with the tiny model
    (data_builders/prompt_tuning.py, into data_dir/prompts/<protocol>) and builds 'learned_<protocol>-<embedding>'.
    """
    if tree not in TREES:
        raise ValueError(f"config.data.demo_tree must be one of {sorted(TREES)}, got {tree!r}")
    tfds_config = tfds_format.config_name(tfds_format.stored_prompt_set(prompt_set, protocol), embedding)
    with demo_data.exclusive(data_dir):
        if demo_data.is_built(data_dir, "mmact", tfds_config):
            logging.info("demo dataset %s already built in %s", tfds_config, data_dir)
            return data_dir
        manual_dir = demo_data.generated_release(
            os.path.join(data_dir, "manual"), lambda root: synthetic_tree.write_tree(root, TREES[tree])
        )
        model_dir = demo_data.tiny_model_dir(data_dir, prompts.vocabulary())
        embeddings_dir = os.path.join(data_dir, "embeddings")
        learned = _learned_prompt(data_dir, manual_dir, model_dir, protocol) if prompt_set == "learned" else None
        summary = extract_embeddings.extract(
            manual_dir, embeddings_dir, model_dir, prompt_set, batch_size=16, device="cpu", learned_prompt=learned
        )  # skips clips already extracted
        logging.info(
            "demo: extracted %d clips (%d already done), %d could not be decoded",
            summary["extracted"],
            summary["skipped_done"],
            len(summary["failed"]),
        )
        directory, report = build.build(manual_dir, embeddings_dir, data_dir, tfds_config)
        logging.info("demo: built %s: %s", directory, report)
    return data_dir


def _learned_prompt(data_dir: str, manual_dir: str, model_dir: str, protocol: str) -> str:
    """The demo's soft prompt for `protocol`, learned once (resumed if a run stopped midway); its file's path."""
    output = os.path.join(data_dir, "prompts", protocol)
    path = os.path.join(output, prompt_tuning.PROMPT_FILE)
    if not os.path.exists(path):
        examples, classes = prompt_tuning.mmact_training_clips(manual_dir, protocol, "context")
        settings = prompt_tuning.Settings(model=model_dir, dataset=manual_dir, protocol=protocol, **DEMO_PROMPT_TUNING)
        metadata = prompt_tuning.train(settings, examples, classes, output, DEMO_PROMPT_STEPS, checkpoint_every=20)
        logging.info("demo: learned a prompt on %s (final loss %.3f)", protocol, metadata["final_loss"])
    return path


def from_config(data: Any) -> str:
    """The entry of the demo registry (harjax/data/demos.py): config.data's dataset, built unless it is there."""
    return prepare(data.data_dir, data.prompt_set, data.embedding, data.demo_tree, data.protocol)
