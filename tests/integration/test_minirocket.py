"""The MiniRocket encoder: aeon's features on the same input, masks respected, its state fitted once from training.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_minirocket.py.
"""

import jax
import numpy as np
import pytest

from harjax.data import batch as batch_lib, synthetic
from harjax.models import har_model, minirocket_encoder as minirocket, ridge
from harjax.training import loop
from tests.conftest import read_metrics, small_config


def _config(ensemble_size=1):
    from configs import sensor_only

    config = small_config(sensor_only)
    config.model.update(encoder="minirocket", ensemble_size=ensemble_size)
    config.model.minirocket.update(num_features=168, stride=2, dim=16)
    config.train.update(num_steps=6, eval_every=3, checkpoint_every=3)
    return config


def test_the_fitted_state_comes_from_the_training_split_before_step_0_and_a_resume_keeps_it(tmp_path, monkeypatch):
    config = _config(ensemble_size=2)
    half = config.copy_and_resolve_references()
    half.train.num_steps = 3
    loop.train_and_evaluate(half, str(tmp_path / "resumed"))
    run = loop._setup(config, str(tmp_path / "resumed"))
    try:
        stats, _ = run.checkpointer.restore(3, run.abstract_state)
    finally:
        run.close()
    fitted = stats.batch_stats[har_model.MINIROCKET_SCOPE]
    assert config.model.minirocket.length == config.data.max_length  # resolved, so config.json records it
    assert fitted["biases"].shape == (2, 168) and not np.allclose(fitted["biases"][0], fitted["biases"][1])
    assert np.all(np.asarray(fitted["std"]) > 0) and np.any(np.asarray(fitted["biases"]) != 0)

    train = loop._setup(config, str(tmp_path / "probe")).splits["train"]
    order = np.sort(np.random.default_rng(config.seed).permutation(len(train))[: loop.FIT_EXAMPLES])
    sample = batch_lib.examples(train, order)
    model = har_model.build_model(config, train.num_classes)
    again = har_model.fit_statistics(model, {}, sample, [config.seed, 1])[har_model.MINIROCKET_SCOPE]
    np.testing.assert_allclose(np.asarray(fitted["biases"][1]), again["biases"])

    def refit(*args, **kwargs):
        raise AssertionError("a resume refitted the MiniRocket biases")

    monkeypatch.setattr(har_model, "fit_statistics", refit)
    loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.undo()
    loop.train_and_evaluate(config, str(tmp_path / "whole"))
    assert read_metrics(str(tmp_path / "resumed")) == read_metrics(str(tmp_path / "whole"))


@pytest.fixture(scope="module")
def ridge_run(tmp_path_factory):
    """(config, workdir) of a finished configs/sensor_minirocket.py run on the synthetic task."""
    from configs import sensor_minirocket

    config = small_config(sensor_minirocket)
    config.model.minirocket.update(num_features=336)
    config.data.synthetic.update(num_train=120, num_eval=60)
    config.train.update(num_steps=1, eval_every=1, checkpoint_every=1)  # the recipe's, which small_config changed
    workdir = str(tmp_path_factory.mktemp("ridge") / "run")
    loop.train_and_evaluate(config, workdir)
    return config, workdir


def test_a_ridge_run_predicts_what_aeons_classifier_fits_on_its_features(ridge_run):
    """configs/sensor_minirocket.py: the whole training split's features, standardised, through RidgeClassifierCV.

    The run fits before step 0 and its one step changes nothing; its test predictions are scikit-learn's on the
    same features (which equal aeon's transform: the tests above), and the fitted state travels in the checkpoint.
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    config, workdir = ridge_run
    run = loop._setup(config, workdir)
    try:
        state, _ = run.checkpointer.restore(1, run.abstract_state)
        train, scored = run.splits["train"], run.splits["eval"]
    finally:
        run.close()
    model = har_model.build_model(config, train.num_classes)
    fitted = state.batch_stats[har_model.MINIROCKET_SCOPE]
    head = state.batch_stats[har_model.RIDGE_SCOPE]

    def whole_recordings(split):
        examples = batch_lib.examples(split, range(len(split)))
        plan = minirocket.make_plan(config.data.max_length, examples[batch_lib.SENSOR].shape[-1], 336, 32, 0)
        ppv = minirocket.features(
            examples[batch_lib.SENSOR], examples[batch_lib.SENSOR_MASK], plan, fitted["biases"], config.data.max_length
        )
        return np.asarray(ppv)[:, 0], examples[batch_lib.LABEL]

    train_x, train_y = whole_recordings(train)
    scaler = StandardScaler().fit(train_x)
    reference = RidgeClassifierCV(alphas=ridge.ALPHAS).fit(scaler.transform(train_x), train_y)
    assert float(head["alpha"]) == pytest.approx(reference.alpha_)
    scored_x, scored_y = whole_recordings(scored)
    examples = batch_lib.examples(scored, range(len(scored)))
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, examples, train=False).logits
    np.testing.assert_array_equal(np.argmax(logits, 1), reference.predict(scaler.transform(scored_x)))
    accuracy = [line for line in read_metrics(workdir) if "eval/accuracy" in line][-1]["eval/accuracy"]
    assert accuracy == pytest.approx(np.mean(reference.predict(scaler.transform(scored_x)) == scored_y))


def test_a_ridge_beside_a_trained_head_mixes_its_probabilities_in_at_its_weight_and_never_trains():
    """config.model.ridge_weight: evaluation predicts (1 - w) p_trained + w p_ridge; training sees the trained part."""
    from configs import sensor_small

    config = small_config(sensor_small)
    config.model.update(ridge_weight=0.3, ensemble_size=1)
    config.model.minirocket.update(num_features=168)
    har_model.resolve_reference_length(config)
    data = synthetic.generate(config.data.synthetic, "train", config.seed).arrays
    batch = {name: data[name][:64] for name in (batch_lib.SENSOR, batch_lib.SENSOR_MASK, batch_lib.LABEL)}

    def build(**model):
        changed = config.copy_and_resolve_references()
        changed.model.update(**model)
        return har_model.build_model(changed, 6)

    hybrid = build()
    assert har_model.fits_statistics(hybrid) and har_model.has_ridge(hybrid)
    initial = hybrid.init(jax.random.key(0), batch, train=False)
    variables = {
        "params": initial["params"],
        "batch_stats": har_model.fit_statistics(hybrid, initial["batch_stats"], batch, 0),
    }
    trained_part = build(ridge_weight=0.0)
    ridge_part = build(encoder="minirocket", head="ridge", ridge_weight=0.0)
    output = hybrid.apply(variables, batch, train=False)
    trained_logits = trained_part.apply(variables, batch, train=False).logits
    ridge_logits = ridge_part.apply({"batch_stats": variables["batch_stats"]}, batch, train=False).logits
    expected = 0.7 * jax.nn.softmax(trained_logits) + 0.3 * jax.nn.softmax(ridge_logits)
    np.testing.assert_allclose(np.exp(output.logits), expected, rtol=1e-5, atol=1e-6)
    # each family's own logits ride along, for their own metrics ('trained/accuracy', 'ridge/accuracy')
    np.testing.assert_allclose(output.family_logits, np.stack([trained_logits, ridge_logits], 1), rtol=1e-5, atol=1e-6)

    def training_logits(model):
        output, _ = model.apply(
            variables, batch, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
        )
        return output.logits

    np.testing.assert_array_equal(training_logits(hybrid), training_logits(trained_part))


def test_a_bundle_whose_fitted_biases_are_missing_is_refused_naming_them(ridge_run, tmp_path):
    """A bundle mixed up by hand (its checksum updated) that lost the MiniRocket biases: one line, before predicting."""
    import hashlib
    import json

    import flax

    from harjax.serving import bundle as bundle_lib, export

    directory = tmp_path / "bundle"
    export.bundle_from_workdir(ridge_run[1], str(directory), "best")
    path = directory / bundle_lib.PARAMS_FILE
    variables = flax.serialization.msgpack_restore(path.read_bytes())
    del variables["batch_stats"][har_model.MINIROCKET_SCOPE]["biases"]
    path.write_bytes(flax.serialization.msgpack_serialize(variables))
    meta = json.loads((directory / bundle_lib.BUNDLE_FILE).read_text())
    meta["params_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / bundle_lib.BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        bundle_lib.BundleError, match=r"batch_stats/MiniRocketEncoder_0/biases is missing, expected shape \(336,\)"
    ):
        bundle_lib.Bundle.load(str(directory))
