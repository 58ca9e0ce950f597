"""Training and evaluation in-process: outputs, skipped non-finite updates, npz training, checkpoint checks."""

import json
import os

import jax
import numpy as np
import pytest

from configs import concat_fusion, full, late_fusion, no_contrastive, no_transformer, sensor_only, video_only
from harjax import checkpointing, parallel, step as step_lib, train
from harjax.data import batch as batch_lib, pipeline, synthetic
from harjax.models.har_model import build_model
from tests.conftest import small_config


def _read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_writes_a_reproducible_workdir(tmp_path, config):
    workdir = str(tmp_path)
    final = train.train_and_evaluate(config, workdir)

    record = json.load(open(os.path.join(workdir, "config.json")))
    assert record["config"] == json.loads(json.dumps(config.to_dict()))
    assert record["seed"] == config.seed and record["harjax_version"] and record["git_commit"]
    assert record["data"]["train"]["fingerprint"] and record["data"]["eval"]["examples"] == 100

    lines = _read_metrics(workdir)
    train_steps = [line["step"] for line in lines if "train/loss" in line]
    assert train_steps == list(range(1, 7))
    eval_lines = [line for line in lines if "eval/macro_f1" in line]
    assert [line["step"] for line in eval_lines] == [3, 6]
    assert eval_lines[-1]["eval/accuracy"] == final["eval/accuracy"]
    assert {"train/cross_entropy", "train/contrastive", "train/temperature", "train/nonfinite_steps",
            "train/learning_rate"} <= set(lines[0])

    report = json.load(open(os.path.join(workdir, "eval", "eval_step_6.json")))
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (6, 6) and confusion.sum() == 100  # every eval example exactly once
    assert len(report["per_class_f1"]) == 6 and report["class_names"][0] == "class_00"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

    # --mode=eval scores the latest checkpoint and finds the same numbers.
    assert train.evaluate(config, workdir)["eval/accuracy"] == final["eval/accuracy"]


def test_nonfinite_loss_skips_the_update(config):
    mesh = parallel.make_mesh()
    data = synthetic.generate(config.data.synthetic, "train", config.seed)
    model = build_model(config, data.num_classes)
    schedule = step_lib.learning_rate_schedule(config.train)
    batch = {name: array[:32] for name, array in data.arrays.items()}
    state = step_lib.create_train_state(model, step_lib.make_optimizer(config.train, schedule), batch, 0)
    train_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight, schedule)
    params_before = jax.device_get(state.params)

    poisoned = {**batch, batch_lib.SENSOR: batch[batch_lib.SENSOR].copy()}
    poisoned[batch_lib.SENSOR][3, 0, 0] = np.nan
    state, metrics = train_step(state, parallel.global_batch(poisoned, mesh))
    assert not np.isfinite(metrics["loss"])
    assert int(state.step) == 1 and int(state.nonfinite_steps) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params_before)
    numeric = jax.device_get((state.params, state.opt_state, state.batch_stats))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(numeric))

    for expected_learning_rate in (schedule(0), schedule(1)):  # the skipped step did not advance the schedule
        state, metrics = train_step(state, parallel.global_batch(batch, mesh))
        assert np.isfinite(metrics["loss"]) and int(state.nonfinite_steps) == 1
        np.testing.assert_allclose(metrics["learning_rate"], expected_learning_rate)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), params_before)
    assert any(jax.tree.leaves(changed))


def test_sensor_only_trains_from_npz(tmp_path):
    config = small_config(sensor_only)
    for split in ("train", "eval"):
        data = synthetic.generate(config.data.synthetic, split, config.seed)
        np.savez(tmp_path / f"{split}.npz", **{name: array for name, array in data.arrays.items()
                                               if name != batch_lib.VIDEO})
    config.data.update(source="npz", train_path=str(tmp_path / "train.npz"), eval_path=str(tmp_path / "eval.npz"))
    config.train.update(num_steps=60, eval_every=60, checkpoint_every=60, log_every=10, learning_rate=3e-3)
    final = train.train_and_evaluate(config, str(tmp_path / "workdir"))
    # Sensors alone tell apart 3 of the 6 synthetic classes' pairs: well above chance (1/6), capped near 1/2.
    assert final["eval/accuracy"] > 0.3
    losses = [line["train/loss"] for line in _read_metrics(str(tmp_path / "workdir")) if "train/loss" in line]
    assert losses[-1] < losses[0]


def test_incompatible_checkpoint_names_the_mismatch(tmp_path, config):
    config.train.num_steps = 3
    train.train_and_evaluate(config, str(tmp_path))
    config.model.model_dim = 64
    config.train.num_steps = 6
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match=r"model\.model_dim: checkpoint 32, config 64"):
        train.train_and_evaluate(config, str(tmp_path))


def test_a_finished_run_resumes_without_training(tmp_path, config):
    train.train_and_evaluate(config, str(tmp_path))
    before = _read_metrics(str(tmp_path))
    train.train_and_evaluate(config, str(tmp_path))
    assert _read_metrics(str(tmp_path)) == before


@pytest.mark.slow
@pytest.mark.parametrize("config_module", [full, video_only, sensor_only, concat_fusion, late_fusion, no_transformer,
                                           no_contrastive], ids=lambda m: m.__name__.split(".")[-1])
def test_every_baseline_and_ablation_trains_on_synthetic(tmp_path, config_module):
    config = small_config(config_module)
    config.train.update(num_steps=40, eval_every=40, checkpoint_every=40, log_every=40, learning_rate=3e-3)
    final = train.train_and_evaluate(config, str(tmp_path))
    assert final["eval/accuracy"] > 0.3  # chance is 1/6


def test_checkpoint_keeps_latest_and_best(tmp_path, config):
    config.train.update(num_steps=12, eval_every=3, checkpoint_every=3, keep_checkpoints=1)
    train.train_and_evaluate(config, str(tmp_path))
    f1 = {line["step"]: line["eval/macro_f1"] for line in _read_metrics(str(tmp_path)) if "eval/macro_f1" in line}
    best = max(f1, key=lambda step: (f1[step], -step))
    kept = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints"))
    assert kept == sorted({best, 12})
