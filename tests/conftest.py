"""Tests run on 8 fake CPU devices so every sharded path is exercised on one machine (even where a GPU exists)."""

import json
import os

import jax
import ml_collections

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

from configs import (concat_fusion, full, late_fusion, no_attention, no_contrastive, no_transformer,  # noqa: E402
                     sensor_only, video_only)

NUM_DEVICES = 8
ALL_CONFIGS = [full, video_only, sensor_only, concat_fusion, late_fusion, no_attention, no_transformer,
               no_contrastive]


def config_id(module) -> str:
    return module.__name__.split(".")[-1]


def pytest_configure(config):
    assert jax.device_count() == NUM_DEVICES, "jax was initialised before conftest could ask for 8 CPU devices"


def small_config(variant_module=full) -> ml_collections.ConfigDict:
    """A config of the given file, shrunk so a step compiles and runs in well under a second."""
    config = variant_module.get_config("synthetic")
    config.data.synthetic.update(num_train=256, num_eval=100, seq_len=32, video_dim=32, num_classes=6)
    config.model.update(encoder_channels=(16, 32), encoder_strides=(1, 2), model_dim=32, num_layers=1, num_heads=2,
                        mlp_dim=64, head_dim=32, projection_dim=16)
    config.train.update(batch_size=32, eval_batch_size=32, num_steps=6, warmup_steps=2, log_every=1, eval_every=3,
                        checkpoint_every=3)
    return config


def read_metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def config():
    return small_config()
