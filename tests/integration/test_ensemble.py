"""Ensembles (config.model.ensemble_size): N members in one vmapped step, each the model trained alone with its keys."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from configs import full, sensor_only
from harjax import errors
from harjax.data import batch as batch_lib, synthetic
from harjax.models import ensemble, har_model
from harjax.training import loop, memory, parallel, step as step_lib
from tests.conftest import small_config

MEMBERS = 2


def _augmented(config):
    config.data.augment.update(jitter=0.05, scale=0.1, time_warp=0.1, crop=0.9)
    return config


def _softmax_ignores(path) -> bool:
    """Whether a leaf is (the optimizer state of) an attention key bias, which no two programs need agree on.

    Adding one vector to every key shifts all of a query's logits alike, which the softmax ignores: the bias's
    gradient is zero but for rounding, and Adam scales that rounding up to steps of the learning rate's size, so
    the vmapped and the single program move it apart (seen: 1e-6 against -1e-6 after three steps).
    """
    return "['key']['bias']" in jax.tree_util.keystr(path)


@pytest.mark.parametrize("ensemble_step", ["sequential", "vmap"])
def test_each_member_is_the_model_trained_alone_with_its_keys(ensemble_step):
    """Same batches, member m's initialisation, dropout and augmentation keys: the same parameters, to float rounding.

    Both ways of running the members: sequential (what 'auto' picks on CPU) and vmapped (on accelerators), the
    full model's global InfoNCE (a shard_map over the 8 devices) under the member vmap included.
    """
    config = _augmented(small_config(sensor_only if ensemble_step == "sequential" else full))
    mesh = parallel.make_mesh()
    data = synthetic.generate(config.data.synthetic, "train", config.seed)
    model = har_model.build_model(config, data.num_classes)
    tx = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    batches = [{name: array[32 * i : 32 * (i + 1)] for name, array in data.arrays.items()} for i in range(3)]
    streams = tuple(map(tuple, batch_lib.sensor_streams(data.channel_names).values()))
    augmentation = (config.data.augment, streams)

    members = jax.jit(lambda: step_lib.create_train_state(model, tx, batches[0], config.seed, MEMBERS))()
    single_state = jax.jit(functools.partial(step_lib.member_train_state, model, tx, batches[0]))
    singles = [single_state(ensemble.member_key(config.seed, m, MEMBERS)) for m in range(MEMBERS)]
    members_step = step_lib.jit_train_step(
        mesh, config.loss.contrastive_weight, None, augmentation, MEMBERS, ensemble_step
    )
    single_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight, None, augmentation)
    for batch in batches:
        members, metrics = members_step(members, parallel.global_batch(batch, mesh))
        single_losses = []
        for m in range(MEMBERS):
            singles[m], single_metrics = single_step(singles[m], parallel.global_batch(batch, mesh))
            single_losses.append(float(single_metrics["loss"]))
        np.testing.assert_allclose(metrics["loss"], np.mean(single_losses), rtol=1e-5)  # the members' mean
    got = jax.device_get(members)
    for m, single in enumerate(jax.device_get(singles)):
        jax.tree_util.tree_map_with_path(
            lambda path, a, b: _softmax_ignores(path) or np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
            (ensemble.member(got.params, m), ensemble.member(got.opt_state, m), ensemble.member(got.batch_stats, m)),
            (single.params, single.opt_state, single.batch_stats),
        )
    first, second = (ensemble.member(got.params, m) for m in range(MEMBERS))
    assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(second)[0])  # their own initialisation


@pytest.fixture(scope="module")
def trained_ensemble(tmp_path_factory):
    config = small_config()
    config.model.ensemble_size = MEMBERS
    config.evals.attention.update(at_end=True, examples=3)
    workdir = str(tmp_path_factory.mktemp("ensemble"))
    final = loop.train_and_evaluate(config.copy_and_resolve_references(), workdir)
    return config, workdir, final


def test_an_ensemble_is_scored_by_its_mean_probabilities_and_each_member_by_its_own(trained_ensemble):
    config, workdir, final = trained_ensemble
    member_keys = [f"eval/member_{m}/{name}" for m in range(MEMBERS) for name in ("accuracy", "macro_f1")]
    assert all(key in final for key in ["eval/accuracy", "eval/macro_f1", *member_keys])
    assert json.load(open(os.path.join(workdir, "config.json")))["config"]["model"]["ensemble_size"] == MEMBERS

    run = loop._setup(config.copy_and_resolve_references(), workdir)
    try:
        state, _ = run.checkpointer.restore(run.checkpointer.latest_step, run.abstract_state)
        rows = run.predict_fns["test"]["predict"](state).rows
    finally:
        run.close()
    assert jax.tree.leaves(state.params)[0].shape[0] == MEMBERS  # every member in the checkpoint
    member_logits = rows["member_logits"]  # [N, members, classes]
    probabilities = jax.nn.softmax(member_logits, axis=-1).mean(axis=1)
    np.testing.assert_allclose(jax.nn.softmax(rows["logits"], axis=-1), probabilities, rtol=1e-5, atol=1e-6)
    for m in range(MEMBERS):
        accuracy = np.mean(member_logits[:, m].argmax(-1) == rows[batch_lib.LABEL])
        assert final[f"eval/member_{m}/accuracy"] == pytest.approx(accuracy)
    assert final["eval/accuracy"] == pytest.approx(np.mean(rows["logits"].argmax(-1) == rows[batch_lib.LABEL]))

    attention = np.load(os.path.join(workdir, "analysis", "attention.npz"))
    k, segments, steps = attention["alpha"].shape
    assert attention["member_alpha"].shape == (k, MEMBERS, segments, steps)
    np.testing.assert_allclose(attention["alpha"], attention["member_alpha"].mean(axis=1), rtol=1e-5, atol=1e-7)


def _refused(config, workdir, message: str) -> None:
    """Training with `config` fails before its first step with a ConfigError matching `message`."""
    with pytest.raises(errors.ConfigError, match=message):
        loop.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))
    assert not os.listdir(workdir / "checkpoints") and not os.path.exists(workdir / "metrics.jsonl")


def test_settings_an_ensemble_cannot_use_fail_before_training(tmp_path, monkeypatch):
    config = small_config()
    for size in (0, -1):
        config.model.ensemble_size = size
        with pytest.raises(errors.ConfigError, match=r"config.model.ensemble_size must be a positive integer"):
            loop.train_and_evaluate(config.copy_and_resolve_references(), str(tmp_path / f"bad{size}"))

    config.model.update(ensemble_size=1, ensemble_step="batched")  # checked for every run, ensemble or not
    with pytest.raises(errors.ConfigError, match=r"config.model.ensemble_step must be one of \('auto', 'vmap', 'seq"):
        loop.train_and_evaluate(config.copy_and_resolve_references(), str(tmp_path / "bad_step"))
    config.model.ensemble_step = "auto"

    # Members whose parameters and optimizer state exceed the free memory: refused before the state is created.
    config.model.ensemble_size = MEMBERS
    left = iter([1024, 2**40, 1024])  # free bytes: this run's state check; the next run's state and step checks
    monkeypatch.setattr(memory, "available", lambda: (next(left), "available on the host per CPU device"))
    refusal = r"ensemble_size=2 at config.train.batch_size=32 does not fit: "
    _refused(
        config,
        tmp_path / "huge",
        refusal + r"the parameters and optimizer state take [\d.]+ GB, 0.00 GB is available on the host per CPU device",
    )
    # A state that fits but activations that do not: refused from the compiled step, before the first step.
    _refused(config, tmp_path / "activations", refusal + r"the train step needs [\d.]+ GB beyond the training state")
