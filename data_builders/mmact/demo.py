"""The demo's data: a synthetic MMAct tree, tiny-model embeddings and the built TFDS dataset, made once.

harjax.main calls prepare() for configs/full.py:demo, so the whole real path (release layout -> extractor ->
TFDS builder -> grain pipeline -> training) runs on a fresh machine without MMAct or a GPU.
"""

from __future__ import annotations

import logging
import os

from data_builders.mmact import build, extract_embeddings, make_dummy_data, synthetic_tree, tiny_model

SPEC = synthetic_tree.TreeSpec(subjects=(1, 2, 3, 4, 5, 6, 17, 18), scenes=(1, 2, 3, 4), sessions=(1, 2, 5),
                               actions_per_scene=5, clip_frames=8, frame_size=(48, 32))


def prepare(data_dir: str) -> str:
    """Builds the demo dataset under data_dir unless it is there; returns data_dir."""
    dataset = os.path.join(data_dir, "mmact", make_dummy_data.TFDS_CONFIG)
    if os.path.isdir(dataset) and any(name[:1].isdigit() for name in os.listdir(dataset)):
        logging.info("demo dataset already built in %s", dataset)
        return data_dir
    manual_dir, model_dir = os.path.join(data_dir, "manual"), os.path.join(data_dir, "tiny_video_llava")
    logging.info("demo: writing a synthetic MMAct tree to %s", manual_dir)
    synthetic_tree.write_tree(manual_dir, SPEC)
    tiny_model.save_tiny_model(model_dir)
    embeddings_dir = os.path.join(data_dir, "embeddings")
    summary = extract_embeddings.extract(manual_dir, embeddings_dir, model_dir, make_dummy_data.PROMPT_SET,
                                         batch_size=16, device="cpu")
    logging.info("demo: extracted %d clips, %d could not be decoded", summary["extracted"], len(summary["failed"]))
    directory, report = build.build(manual_dir, embeddings_dir, data_dir, make_dummy_data.TFDS_CONFIG)
    logging.info("demo: built %s: %s", directory, report)
    return data_dir
