"""Checkpoints and bundles written by earlier harjax versions still load and give the same logits.

The fixtures in tests/fixtures/written_by_<commit>/ were written by tests/fixtures/make_compat_fixtures.py at that
commit: one bundle per model variant with raw inputs and the logits that version gave for them, and the training
workdir of the full model. A change that moves a parameter (a renamed submodule, a new nesting) fails here.
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from harjax.serving import bundle as bundle_lib, export, predictor as predictor_lib
from harjax.study import suites
from harjax.training import loop
from tests.conftest import REPO, read_metrics

FIXTURES = sorted(glob.glob(os.path.join(REPO, "tests", "fixtures", "written_by_*")))
BUNDLES = [path for root in FIXTURES for path in sorted(glob.glob(os.path.join(root, "*", "bundle.json")))]


def _logits(bundle_dir: str, fixture_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits of this harjax's load of a bundle, logits of the version that wrote the fixture) on its raw inputs."""
    predictor = predictor_lib.Predictor.load(bundle_dir)
    with np.load(os.path.join(fixture_dir, "inputs.npz")) as inputs:
        got = predictor.predict_batch(inputs["sensor"], inputs["sensor_mask"], inputs.get("video")).logits
    return got, np.load(os.path.join(fixture_dir, "logits.npy"))


def test_fixtures_cover_every_model_variant():
    assert FIXTURES, "no compatibility fixtures found"
    for root in FIXTURES:
        variants = json.load(open(os.path.join(root, "fixture.json")))["variants"]
        assert {"full", "sensor_only", "video_only", "late_fusion", "full_frames"} <= set(variants)


@pytest.mark.parametrize("bundle_json", BUNDLES, ids=lambda path: "/".join(path.split(os.sep)[-3:-1]))
def test_an_earlier_bundle_gives_the_logits_it_was_written_with(bundle_json):
    got, expected = _logits(os.path.dirname(bundle_json), os.path.dirname(bundle_json))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("root", FIXTURES, ids=os.path.basename)
def test_an_earlier_checkpoint_exports_with_its_logits(root, tmp_path):
    workdir = str(tmp_path / "workdir")
    shutil.copytree(os.path.join(root, "full_workdir"), workdir)
    bundle = export.bundle_from_workdir(workdir, str(tmp_path / "bundle"), "latest")
    got, expected = _logits(bundle.directory, os.path.join(root, "full"))  # "full" was exported from it
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    steps = json.load(open(os.path.join(workdir, "overrides.json")))["overrides"]["train.num_steps"]
    assert bundle.meta["training"] == {"last_step": steps, "num_steps": steps, "finished": True}


@pytest.mark.parametrize("root", FIXTURES, ids=os.path.basename)
def test_an_earlier_bundle_without_a_training_record_exports_again(root, tmp_path):
    """harjax.export --bundle=OLD --output=NEW: a bundle from before the 'training' record is not called unfinished."""
    earlier = bundle_lib.Bundle.load(os.path.join(root, "full"))
    assert "training" not in earlier.meta
    again = export.write_bundle(str(tmp_path / "again"), earlier.meta, earlier.variables)
    assert "training" not in again.meta and "Unfinished" not in open(tmp_path / "again" / "MODEL_CARD.md").read()


@pytest.mark.parametrize("root", FIXTURES, ids=os.path.basename)
def test_an_earlier_checkpoint_resumes(root, tmp_path):
    """The same command with one more step restores the whole train state (optimizer included) and goes on."""
    workdir = str(tmp_path / "workdir")
    shutil.copytree(os.path.join(root, "full_workdir"), workdir)
    recorded = json.load(open(os.path.join(workdir, "overrides.json")))
    steps = recorded["overrides"]["train.num_steps"]
    overrides = [f"{key}={value}" for key, value in (recorded["overrides"] | {"train.num_steps": steps + 1}).items()]
    config = suites.resolve_config(os.path.join(REPO, recorded["config"]), overrides)
    loop.train_and_evaluate(config, workdir)
    assert [line["step"] for line in read_metrics(workdir) if "train/loss" in line][-1] == steps + 1
