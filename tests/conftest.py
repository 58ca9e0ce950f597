"""Tests run on 8 fake CPU devices so every sharded path is exercised on one machine."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

from configs import full  # noqa: E402

NUM_DEVICES = 8


def pytest_configure(config):
    assert jax.device_count() == NUM_DEVICES, "XLA_FLAGS must be set before anything imports jax"


def small_config(variant_module=full):
    """A config of the given file, shrunk so a step compiles and runs in well under a second."""
    config = variant_module.get_config("synthetic")
    config.data.synthetic.update(num_train=256, num_eval=100, seq_len=32, video_dim=32, num_classes=6)
    config.model.update(encoder_channels=(16, 32), encoder_strides=(1, 2), model_dim=32, num_layers=1, num_heads=2,
                        mlp_dim=64, head_dim=32, projection_dim=16)
    config.train.update(batch_size=32, eval_batch_size=32, num_steps=6, warmup_steps=2, log_every=1, eval_every=3,
                        checkpoint_every=3)
    return config


@pytest.fixture
def config():
    return small_config()
