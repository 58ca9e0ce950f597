"""Training and evaluation in-process: outputs, skipped non-finite updates, npz training, checkpoint checks."""

import glob
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from harjax import errors
from harjax.data import batch as batch_lib, synthetic
from harjax.models import har_model
from harjax.training import checkpointing, loop, parallel, step as step_lib
from tests.conftest import read_metrics as _read_metrics, small_config


def test_training_writes_a_reproducible_workdir(trained_full, tmp_path):
    config, final = trained_full.config, trained_full.final
    workdir = trained_full.copy(tmp_path / "workdir")  # --mode=eval below writes into it

    record = json.load(open(os.path.join(workdir, "config.json")))
    assert record["config"] == json.loads(json.dumps(config.to_dict()))
    assert record["seed"] == config.seed and record["harjax_version"] and record["git_commit"]
    assert record["data"]["train"]["fingerprint"] and record["data"]["eval"]["examples"] == 100

    lines = _read_metrics(workdir)
    train_steps = [line["step"] for line in lines if "train/loss" in line]
    assert train_steps == list(range(1, 7))
    eval_lines = [line for line in lines if "eval/macro_f1" in line]
    assert [line["step"] for line in eval_lines] == [0, 3, 6]  # step 0: the untrained model
    assert eval_lines[-1]["eval/accuracy"] == final["eval/accuracy"]
    assert {
        "train/cross_entropy",
        "train/contrastive",
        "train/temperature",
        "train/nonfinite_steps",
        "train/learning_rate",
    } <= set(next(line for line in lines if "train/loss" in line))

    report = json.load(open(os.path.join(workdir, "eval", "eval_step_6.json")))
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (6, 6) and confusion.sum() == 100  # every eval example exactly once
    assert len(report["per_class_f1"]) == 6 and report["class_names"][0] == "class_00"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

    # Wall-clock figures beside metrics.jsonl, never in it: throughput at every log line after the first step,
    # which is reported alone (it compiles); the time of each evaluator at every evaluation.
    assert not any(key.startswith("perf/") for line in lines for key in line)
    perf = _read_metrics(workdir, "perf.jsonl")
    throughput = [line for line in perf if "perf/train/steps_per_second" in line]
    assert [line["step"] for line in throughput] == list(range(2, 7))
    assert all(
        line["perf/train/examples_per_second"] == pytest.approx(32 * line["perf/train/steps_per_second"])
        for line in throughput
    )
    assert [line["step"] for line in perf if "perf/train/first_step_seconds" in line] == [1]
    timed = [line for line in perf if "perf/eval_seconds/eval" in line]
    assert [line["step"] for line in timed] == [0, 3, 6] and all(line["perf/eval_seconds/eval"] > 0 for line in timed)
    # config.train.profile_steps=(2, 4): a trace of steps 2 and 3 that TensorBoard's profiler reads.
    traces = glob.glob(os.path.join(workdir, "profile", "process_0", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0

    # --mode=eval scores the latest checkpoint and finds the same numbers.
    assert loop.evaluate(config, workdir)["eval/accuracy"] == final["eval/accuracy"]


def test_optimizer_caps_the_learnable_temperature(config):
    config.loss.max_logit_scale = 100.0
    config.train.learning_rate = 1.0
    optimizer = step_lib.make_optimizer(config, optax.constant_schedule(1.0))
    params = {har_model.LOGIT_SCALE: jnp.asarray(math.log(99.0)), "kernel": jnp.ones((2, 2))}
    opt_state = optimizer.init(params)
    for _ in range(3):  # gradients that keep pushing 1/tau up
        updates, opt_state = optimizer.update(
            {har_model.LOGIT_SCALE: jnp.asarray(-1.0), "kernel": jnp.ones((2, 2))}, opt_state, params
        )
        params = optax.apply_updates(params, updates)
    assert float(params[har_model.LOGIT_SCALE]) == pytest.approx(math.log(100.0))
    for _ in range(20):  # gradients that pull it back: Adam's momentum turns, and the parameter follows
        updates, opt_state = optimizer.update(
            {har_model.LOGIT_SCALE: jnp.asarray(1.0), "kernel": jnp.ones((2, 2))}, opt_state, params
        )
        params = optax.apply_updates(params, updates)
    assert float(params[har_model.LOGIT_SCALE]) < math.log(50.0)


def test_incompatible_checkpoint_names_the_mismatch(trained_full, tmp_path):
    config = trained_full.fresh_config()
    workdir = trained_full.copy(tmp_path / "workdir")
    config.model.model_dim = 64
    config.train.num_steps = 9
    with pytest.raises(
        checkpointing.IncompatibleCheckpointError,
        match=r"other parameter shapes: model config differences: model\.model_dim: checkpoint 32, config 64; "
        r"parameters: .*\[\[32, 32\], 'float32'\], config \[\[64, 32\], 'float32'\].*; use a new --workdir",
    ):
        loop.train_and_evaluate(config, workdir)


def test_settings_that_do_not_shape_parameters_restore_fine(trained_full, tmp_path):
    config = trained_full.fresh_config()
    config.model.update(dropout=0.3, dtype="bfloat16")
    assert "eval/accuracy" in loop.evaluate(config, trained_full.copy(tmp_path / "workdir"))


def test_a_finished_run_resumes_without_training(trained_full, tmp_path):
    workdir = trained_full.copy(tmp_path / "workdir")
    before = _read_metrics(workdir)
    loop.train_and_evaluate(trained_full.fresh_config(), workdir)
    assert _read_metrics(workdir) == before


def test_checkpointer_keeps_the_latest_and_the_best(tmp_path, config):
    state = step_lib.TrainState.create(
        apply_fn=None,
        params={"w": jnp.zeros(3)},
        tx=optax.sgd(0.1),
        batch_stats={},
        dropout_key=jax.random.key(0),
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )
    abstract = jax.eval_shape(lambda: state)
    checkpointer = checkpointing.Checkpointer(
        str(tmp_path), keep=2, signature=checkpointing.model_signature(config, abstract)
    )
    for step, f1 in zip(range(1, 7), [0.2, 0.9, None, 0.3, None, 0.1], strict=True):
        checkpointer.save(step, state, {}, None if f1 is None else {checkpointing.BEST_METRIC: f1})
        checkpointer.manager.wait_until_finished()
    checkpointer.close()
    assert sorted(int(name) for name in os.listdir(tmp_path) if name.isdigit()) == [2, 5, 6]  # best, last two


def test_a_replicated_state_saves_without_compiling_and_restores_equal(tmp_path, config, caplog):
    """Each array is written whole from one replica: a save runs no jax op (no slice per replica and shape)."""
    mesh = parallel.make_mesh()
    params = {f"w{n}": jnp.arange(8 * n, dtype=jnp.float32).reshape(8, n) for n in range(1, 6)}  # 8 rows: divisible
    state = jax.device_put(
        step_lib.TrainState.create(
            apply_fn=None,
            params=params,
            tx=optax.adam(0.1),
            batch_stats={},
            dropout_key=jax.random.key(0),
            nonfinite_steps=jnp.zeros((), jnp.int32),
        ),
        parallel.replicated(mesh),
    )
    abstract = parallel.replicated_abstract(jax.eval_shape(lambda: state), mesh)
    checkpointer = checkpointing.Checkpointer(
        str(tmp_path), keep=1, signature=checkpointing.model_signature(config, abstract)
    )
    with caplog.at_level("WARNING"), jax.log_compiles():
        checkpointer.save(1, state, {}, None)
        checkpointer.manager.wait_until_finished()
    assert jax.device_count() == 8 and not [r.message for r in caplog.records if "Compiling" in r.message]
    restored, _ = checkpointer.restore(1, abstract)
    checkpointer.close()
    for name, value in params.items():
        np.testing.assert_array_equal(restored.params[name], value)


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory):
    """The metrics of an uninterrupted run that reads its batches record by record (cache 'none')."""
    config = small_config()
    config.train.log_every = 1
    config.data.cache = "none"
    workdir = str(tmp_path_factory.mktemp("streamed"))
    loop.train_and_evaluate(config, workdir)
    return _read_metrics(workdir)


@pytest.mark.parametrize("cache", ["none", "host", "device"])
def test_every_data_cache_trains_alike_and_resumes_exactly(tmp_path, config, monkeypatch, cache, streamed_run):
    """Every data cache trains alike and resumes exactly.

    The run with each cache, stopped for preemption at step 3 and resumed, logs what the streamed run logs
    uninterrupted: the same batches reach the same step function.
    """
    config.train.log_every = 1
    config.data.cache = cache
    with monkeypatch.context() as patch:
        patch.setattr(checkpointing.PreemptionWatcher, "reached", lambda self, step: step == 3)
        loop.train_and_evaluate(config, str(tmp_path))
    assert max(line["step"] for line in _read_metrics(str(tmp_path))) == 3
    loop.train_and_evaluate(config, str(tmp_path))
    assert _read_metrics(str(tmp_path)) == streamed_run
    assert json.load(open(tmp_path / "config.json"))["data_cache"] == cache


def test_a_cache_that_does_not_fit_says_what_to_use(tmp_path, config):
    config.data.update(cache="host", cache_memory_fraction=1e-12)
    with pytest.raises(
        batch_lib.DataError,
        match=r"config.data.cache='host' does not fit \(training split .* GB.*"
        r"use config.data.cache='none'",
    ):
        loop.train_and_evaluate(config, str(tmp_path))
    config.data.cache = "auto"  # auto never picks what does not fit: here, only 'none' does
    loop.train_and_evaluate(config, str(tmp_path))
    assert json.load(open(tmp_path / "config.json"))["data_cache"] == "none"


def test_a_floor_in_epochs_raises_the_steps_of_large_splits_only():
    """min_epochs gives a split of thousands its passes and leaves a tiny one the recipe's steps and cadences."""
    for num_examples, steps in ((40, 1000), (5932, 1854)):  # batch 16: 2.5 and 370.75 steps an epoch
        train = small_config().train
        train.update(batch_size=16, num_steps=1000, eval_every=50, min_epochs=5.0)
        loop.resolve_budget(train, num_examples)
        assert (train.num_steps, train.eval_every) == (steps, 50)
    train.min_epochs = -1.0
    with pytest.raises(errors.ConfigError, match="config.train.min_epochs must be >= 0"):
        loop.resolve_budget(train, 40)


def test_label_smoothing_mixes_the_training_targets(config):
    """config.loss.label_smoothing s: the step's cross-entropy is (1 - s) CE(label) + s CE(uniform), linear in s."""
    mesh = parallel.make_mesh()
    data = synthetic.generate(config.data.synthetic, "train", config.seed)
    model = har_model.build_model(config, data.num_classes)
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    batch = parallel.global_batch({name: array[:32] for name, array in data.arrays.items()}, mesh)
    fresh = jax.jit(lambda: step_lib.create_train_state(model, optimizer, batch, 0))
    losses_at = {}
    for smoothing in (0.0, 0.25, 0.5):
        step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight, label_smoothing=smoothing)
        losses_at[smoothing] = float(step(fresh(), batch)[1]["cross_entropy"])  # the same dropout key each time
    assert abs(losses_at[0.25] - losses_at[0.0]) > 1e-4
    np.testing.assert_allclose(losses_at[0.5] - losses_at[0.25], losses_at[0.25] - losses_at[0.0], rtol=1e-3)
