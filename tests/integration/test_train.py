"""Training and evaluation in-process: outputs, skipped non-finite updates, npz training, checkpoint checks.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_train.py.
"""

import json

import jax
import numpy as np
import pytest

from configs import sensor_only
from harjax.data import batch as batch_lib, synthetic
from harjax.models import har_model
from harjax.training import loop, parallel, step as step_lib
from tests.conftest import ALL_CONFIGS, config_id, read_metrics as _read_metrics, small_config


@pytest.mark.parametrize("poisoned_input", [batch_lib.SENSOR, batch_lib.VIDEO])
def test_nonfinite_loss_skips_the_update(config, poisoned_input):
    mesh = parallel.make_mesh()
    data = synthetic.generate(config.data.synthetic, "train", config.seed)
    model = har_model.build_model(config, data.num_classes)
    schedule = step_lib.learning_rate_schedule(config.train)
    batch = {name: array[:32] for name, array in data.arrays.items()}
    state = jax.jit(lambda: step_lib.create_train_state(model, step_lib.make_optimizer(config, schedule), batch, 0))()
    train_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight)
    before = jax.device_get((state.params, state.opt_state, state.batch_stats))

    poisoned = {**batch, poisoned_input: batch[poisoned_input].copy()}
    poisoned[poisoned_input][3, 0] = np.nan
    state, metrics = train_step(state, parallel.global_batch(poisoned, mesh))
    assert not np.isfinite(metrics["loss"]) and not metrics["finite"]
    assert int(state.step) == 1 and int(state.nonfinite_steps) == 1
    # Parameters, optimizer moments and the video statistics are exactly as before the bad batch.
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get((state.params, state.opt_state, state.batch_stats)), before
    )

    for expected_learning_rate in (schedule(0), schedule(1)):  # the skipped step did not advance the schedule
        state, metrics = train_step(state, parallel.global_batch(batch, mesh))
        assert metrics["finite"] and int(state.nonfinite_steps) == 1
        np.testing.assert_allclose(metrics["learning_rate"], expected_learning_rate)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), before[0])
    assert any(jax.tree.leaves(changed))


def test_sensor_only_trains_from_npz(tmp_path):
    config = small_config(sensor_only)
    for split in ("train", "eval"):
        data = synthetic.generate(config.data.synthetic, split, config.seed)
        np.savez(
            tmp_path / f"{split}.npz", **{name: array for name, array in data.arrays.items() if name != batch_lib.VIDEO}
        )
    config.data.update(source="npz", train_path=str(tmp_path / "train.npz"), eval_path=str(tmp_path / "eval.npz"))
    config.train.update(num_steps=60, eval_every=60, checkpoint_every=60, log_every=10, learning_rate=3e-3)
    final = loop.train_and_evaluate(config, str(tmp_path / "workdir"))
    # Sensors alone tell apart 3 of the 6 synthetic classes' pairs: well above chance (1/6), capped near 1/2.
    assert final["eval/accuracy"] > 0.3
    losses = [line["train/loss"] for line in _read_metrics(str(tmp_path / "workdir")) if "train/loss" in line]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("config_module", ALL_CONFIGS, ids=config_id)
def test_every_baseline_and_ablation_trains_on_synthetic(tmp_path, config_module):
    config = small_config(config_module)
    config.train.update(num_steps=40, eval_every=40, checkpoint_every=40, log_every=40, learning_rate=3e-3)
    loop.train_and_evaluate(config, str(tmp_path))
    # The test split's score at the last step (after training, when a validation split chose the checkpoints).
    accuracy = [line["eval/accuracy"] for line in _read_metrics(str(tmp_path)) if "eval/accuracy" in line][-1]
    assert accuracy > 0.3  # chance is 1/6


def test_a_budget_in_epochs_sets_the_steps_and_cadences_from_the_data(tmp_path, config):
    config.train.update(num_epochs=2.0, warmup_epochs=0.5, eval_every_epochs=1.0, checkpoint_every_epochs=1.0)
    as_given = config.copy_and_resolve_references()  # what a suite holds: the budget in epochs, not yet in steps
    loop.train_and_evaluate(config, str(tmp_path))  # 256 examples, batch 32: 8 steps an epoch
    resolved = json.load(open(tmp_path / "config.json"))["config"]["train"]
    assert (resolved["num_steps"], resolved["warmup_steps"], resolved["eval_every"]) == (16, 4, 8)
    assert [line["step"] for line in _read_metrics(str(tmp_path)) if "eval/accuracy" in line] == [8, 16]
    assert loop.last_step(as_given, str(tmp_path)) == 16 and loop.training_complete(as_given, str(tmp_path))


def test_the_loop_smooths_the_training_targets_it_is_configured_with(tmp_path):
    """config.loss.label_smoothing reaches the loop's step: same seed and batch, another training cross-entropy.

    The first step's logged cross-entropy is the untrained model's on the first batch, so only the targets differ;
    evaluation never smooths, so the untrained model's eval loss is the same in both runs.
    """
    logged = {}
    for smoothing in (0.0, 0.3):
        run_config = small_config()
        run_config.loss.label_smoothing = smoothing
        run_config.train.update(num_steps=1, log_every=1, eval_every=1, eval_at_start=True)
        workdir = tmp_path / f"smoothing_{smoothing}"
        loop.train_and_evaluate(run_config, str(workdir))
        lines = _read_metrics(str(workdir))
        first_train = next(line for line in lines if "train/cross_entropy" in line)
        untrained = next(line for line in lines if line["step"] == 0 and "eval/loss" in line)
        logged[smoothing] = (first_train["train/cross_entropy"], untrained["eval/loss"])
        assert json.load(open(workdir / "config.json"))["config"]["loss"]["label_smoothing"] == smoothing
    assert abs(logged[0.3][0] - logged[0.0][0]) > 1e-3
    assert logged[0.3][1] == pytest.approx(logged[0.0][1], rel=1e-6)
