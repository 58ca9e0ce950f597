"""What every config file shares: its argument (the part of --config=FILE:ARG after ':') and the size presets.

The argument is read as big_vision's configs/common.py parse_arg reads it: comma-separated 'key=value' items, where
an item without '=' is the value of the first key. For configs/full.py and every config built on it the keys are
`variant` (first) and `size`:

    --config=configs/full.py                      variant mmact, size full
    --config=configs/full.py:synthetic            variant synthetic
    --config=configs/full.py:demo,size=tiny       the demo's path at the tiny size
    --config=configs/full.py:size=tiny            the default variant (mmact), tiny

A variant chooses the data (configs/full.py VARIANTS); a size scales the model, the synthetic data and the training
schedule (SIZES below), last, after the config file's own changes, so configs/sensor_only.py:synthetic,size=tiny is
the sensor-only baseline at the tiny size. --config.KEY=VALUE flags still override anything after that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

SIZES: dict[str, dict[str, Any]] = {
    "full": {},  # the config file's own sizes
    # A model that compiles and takes a step in well under a second on a CPU, with data and a schedule to match:
    # the tests' size (tests/conftest.py small_config, tests/cli_runs.py), the paper suite's smoke variant, the
    # compatibility fixtures (tests/fixtures/make_compat_fixtures.py) and benchmarks/inference.py --smoke. Each of
    # those adds only what its use needs (its step counts).
    "tiny": {
        "data.synthetic.num_train": 256,
        "data.synthetic.num_eval": 100,
        "data.synthetic.seq_len": 32,
        "data.synthetic.video_dim": 32,
        "data.synthetic.num_classes": 6,
        "data.max_length": 64,  # mmact, recordings: sensor steps kept of each trial
        "data.demo_tree": "tiny",  # with prepare_demo_data: the 24-trial MMAct release (UTD-MHAD: 216)
        "model.encoder_channels": (16, 32),
        "model.encoder_strides": (1, 2),
        "model.model_dim": 32,
        "model.num_layers": 1,
        "model.num_heads": 2,
        "model.mlp_dim": 64,
        "model.head_dim": 32,
        "model.projection_dim": 16,
        "model.inception.depth": 3,  # where config.model.encoder='inception'
        "model.inception.filters": 8,
        "model.inception.bottleneck": 8,
        "train.batch_size": 32,
        "train.eval_batch_size": 32,
        "train.num_steps": 6,
        "train.warmup_steps": 2,
        "train.log_every": 1,
        "train.eval_every": 3,
        "train.checkpoint_every": 3,
    },
}


def parse_arg(arg: str | None, what: str = "config", **choices: Iterable[str]) -> ml_collections.ConfigDict:
    """A config file's argument as {key: value}, each key taking one of its choices (the first is the default).

    parse_arg('demo,size=tiny', variant=('mmact', 'demo'), size=('full', 'tiny')) -> variant='demo', size='tiny'.
    An item without '=' is the first key's value. An unknown key or value, or a key given twice, raises ValueError
    in one line naming the argument and the choices (harjax.main prints it as its one-line error). `what` names the
    argument: 'config' (--config=FILE:ARG) or 'suite' (--suite=FILE:ARG).
    """
    choices = {key: tuple(values) for key, values in choices.items()}
    first = next(iter(choices))
    form = f"[{first.upper()}]" + "".join(f"[,{key}={key.upper()}]" for key in list(choices)[1:])
    where = f"(the {what} argument {arg or ''!r}, read as FILE:{form})"
    given: dict[str, str] = {}
    for item in (arg or "").split(","):
        if not item:
            continue
        key, value = item.split("=", 1) if "=" in item else (first, item)
        if key not in choices:
            raise ValueError(f"unknown {what} argument key {key!r}; the keys are {', '.join(choices)} {where}")
        if key in given:
            raise ValueError(f"{what} {key} given twice ({given[key]!r} and {value!r}) {where}")
        if value not in choices[key]:
            raise ValueError(f"unknown {what} {key} {value!r}; choose one of {', '.join(choices[key])} {where}")
        given[key] = value
    return ml_collections.ConfigDict({key: given.get(key, values[0]) for key, values in choices.items()})


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Sets each dotted key of `overrides` in `config` (a preset); a key the config lacks raises KeyError."""
    for dotted, value in overrides.items():
        *parents, name = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if name not in node:
            raise KeyError(f"a preset sets {dotted!r}, which the config does not have")
        node[name] = value
    return config


def with_size(config: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
    """The config at a size of SIZES: what a config file does last with its argument's `size`."""
    return override(config, SIZES[size])
