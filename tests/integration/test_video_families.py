"""Every video-language family extraction supports, each through its tiny random model built in code.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_video_families.py.
"""

import json
import os

import numpy as np
import pytest

from data_builders.mmact import build, extract_embeddings, make_dummy_data, prompts, synthetic_tree
from harjax.training import loop
from harjax.video import families, tiny_models
from tests.conftest import read_metrics, small_config


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava_onevision"])
def test_each_family_extracts_builds_and_trains(model_type, tmp_path):
    """The demo's tiny MMAct tree through the whole path with each family's tiny model.

    Video-LLaVA's path is the demo's own; Qwen2-VL is Qwen2.5-VL's family (one adapter; the tests above run both).
    """
    manual_dir, embeddings_dir, data_dir = (str(tmp_path / name) for name in ("mmact", "embeddings", "data"))
    synthetic_tree.write_tree(manual_dir, make_dummy_data.SPEC)
    model_dir = tiny_models.save_tiny_model(
        str(tmp_path / "model"), extra_words=prompts.vocabulary(), family=model_type
    )
    summary = extract_embeddings.extract(manual_dir, embeddings_dir, model_dir, "context", batch_size=8)
    assert summary["extracted"] == summary["clips_in_shard"] - 1 and len(summary["failed"]) == 1  # the broken clip
    config = small_config()
    config.data.update(source="mmact", data_dir=data_dir, tfds_config=make_dummy_data.TFDS_CONFIG, max_length=128)
    build.build(manual_dir, embeddings_dir, data_dir, config.data.tfds_config)
    config.train.update(batch_size=8, eval_batch_size=16)
    workdir = str(tmp_path / "run")
    final = loop.train_and_evaluate(config, workdir)
    assert np.isfinite(final["eval/loss"]) and read_metrics(workdir)[-1]["step"] == config.train.num_steps
    recorded = json.load(open(os.path.join(workdir, "config.json")))["inputs"]["video_source"]["extraction"]
    assert recorded["family"] == families.BY_MODEL_TYPE[model_type].name  # what the bundle will carry
