"""The config argument (--config=FILE:[VARIANT][,size=SIZE], configs/common.py) of every config file and suite."""

import glob
import importlib
import os

import pytest

from configs import common, full
from configs.suites import paper
from tests.conftest import REPO

CONFIG_FILES = sorted(
    os.path.basename(path)[: -len(".py")]
    for path in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if os.path.basename(path) not in ("__init__.py", "common.py")
)


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_reads_a_variant_and_a_size(name):
    module = importlib.import_module(f"configs.{name}")
    default = module.get_config().to_dict()
    for arg in ("", "mmact", "size=full", "variant=mmact,size=full"):
        assert module.get_config(arg).to_dict() == default, arg
    tiny_keys = set(common.SIZES["tiny"])
    for variant in full.VARIANTS:
        plain = _flat(module.get_config(variant).to_dict())
        assert _flat(module.get_config(f"variant={variant},size=full").to_dict()) == plain
        assert plain["data.prepare_demo_data"] == (variant in ("demo", "utd_mhad"))
        tiny = _flat(module.get_config(f"{variant},size=tiny").to_dict())
        assert tiny.keys() == plain.keys()
        # The size comes last, after the file's own changes (configs/sensor_small.py's model_dim 64 becomes 32).
        assert {key: tiny[key] for key in tiny_keys} == common.SIZES["tiny"], variant
        assert {key: value for key, value in tiny.items() if key not in tiny_keys} == {
            key: value for key, value in plain.items() if key not in tiny_keys
        }, variant


@pytest.mark.parametrize(
    "arg, message",
    [
        ("imagenet", "unknown config variant 'imagenet'; choose one of mmact, synthetic, demo, utd_mhad"),
        ("synthetic,size=bogus", "unknown config size 'bogus'; choose one of full, tiny"),
        ("size=", "unknown config size ''; choose one of full, tiny"),
        ("synthetic,colour=red", "unknown config argument key 'colour'; the keys are variant, size"),
        ("demo,synthetic", "config variant given twice ('demo' and 'synthetic')"),
        ("size=tiny,size=full", "config size given twice ('tiny' and 'full')"),
    ],
)
def test_a_bad_argument_is_one_line_naming_it_and_the_choices(arg, message):
    for module in (full, importlib.import_module("configs.sensor_only")):
        with pytest.raises(ValueError) as raised:
            module.get_config(arg)
        text = str(raised.value)
        assert "\n" not in text and text.startswith(message), text
        assert text.endswith(f"(the config argument {arg!r}, read as FILE:[VARIANT][,size=SIZE])"), text


def test_a_preset_sets_only_keys_the_config_has():
    with pytest.raises(KeyError, match="model.encoder_chanels"):
        common.override(full.get_config(), {"model.encoder_chanels": (8,)})


def test_the_suite_reads_every_run_at_its_size():
    assert paper.get_config("utd_mhad").config_variant == "utd_mhad"
    tiny = paper.get_config("utd_mhad,size=tiny")
    assert tiny.config_variant == "utd_mhad,size=tiny" and tiny.title == "The paper's study (utd_mhad, size tiny)"
    smoke = paper.get_config("smoke")  # the demo's data at size tiny, a few steps
    assert smoke.config_variant == "demo,size=tiny" and smoke.title == "The paper's study (smoke)"
    assert smoke.overrides["train.num_steps"] == 4 and "model.model_dim" not in smoke.overrides
    with pytest.raises(ValueError, match=r"^unknown suite size 'huge'; choose one of full, tiny \(the suite argument"):
        paper.get_config("demo,size=huge")
