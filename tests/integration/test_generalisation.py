"""What trains models that generalise.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_generalisation.py.
"""

import json

import pytest

from harjax.data import pipeline
from harjax.serving import export
from harjax.training import checkpointing, loop
from tests.conftest import EVERY_AUGMENTATION, read_metrics, small_config


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory):
    config = small_config()
    config.data.augment.update(EVERY_AUGMENTATION)
    config.train.log_every = 1
    workdir = str(tmp_path_factory.mktemp("augmented"))
    loop.train_and_evaluate(config, workdir)
    return config, workdir, read_metrics(workdir)


def test_a_resumed_augmented_run_is_exact(tmp_path, monkeypatch, augmented_run):
    config, _, uninterrupted = augmented_run
    with monkeypatch.context() as patch:
        patch.setattr(checkpointing.PreemptionWatcher, "reached", lambda self, step: step == 3)
        loop.train_and_evaluate(config, str(tmp_path))
    loop.train_and_evaluate(config, str(tmp_path))
    assert read_metrics(str(tmp_path)) == uninterrupted


def test_evaluation_is_never_augmented(augmented_run):
    """The augmented run's own evaluations equal those of its checkpoint evaluated with augmentation off."""
    config, workdir, _ = augmented_run
    plain = config.copy_and_resolve_references()
    plain.data.augment.update({name: 0.0 for name in EVERY_AUGMENTATION} | {"shift": False})
    evaluated = loop.evaluate(plain, workdir)  # the augmented run's checkpoint, evaluated with augmentation off
    logged = [line for line in read_metrics(workdir) if line["step"] == 6 and "eval/accuracy" in line][0]
    assert evaluated["eval/accuracy"] == logged["eval/accuracy"]
    assert evaluated["eval/loss"] == pytest.approx(logged["eval/loss"], rel=1e-6)


def test_model_selection_uses_the_validation_split_only(tmp_path, monkeypatch):
    """Validation scores choose the best checkpoint; the test split informs no choice.

    The test split is scored at the last and at the selected step, and its predictions never reach the selection
    (the test split's evaluation is never run during training).
    """
    config = small_config()
    config.data.validation_fraction = 0.2
    config.train.update(num_steps=9, eval_every=3, checkpoint_every=3)
    splits = []  # the split of every pass over an evaluation split
    original = pipeline.eval_batches

    def recording(data, *args, **kwargs):
        splits.append("validation" if "[validation part]" in data.origin else "test")
        return original(data, *args, **kwargs)

    monkeypatch.setattr(pipeline, "eval_batches", recording)
    loop.train_and_evaluate(config, str(tmp_path))
    first_test = splits.index("test")
    assert splits[:first_test] == ["validation"] * 3  # steps 3, 6, 9: the test split is not looked at
    assert splits[first_test:] == ["test"] * 2  # after training: at the last and at the selected step
    lines = read_metrics(str(tmp_path))
    validation = {line["step"]: line["val/macro_f1"] for line in lines if "val/macro_f1" in line}
    assert sorted(validation) == [3, 6, 9]
    final = [line for line in lines if "eval_selected/step" in line][0]
    best = max(validation.items(), key=lambda item: (item[1], -item[0]))
    assert final["eval_selected/step"] in [step for step, f1 in validation.items() if f1 == best[1]]
    assert "eval/macro_f1" in final and final["step"] == 9
    record = json.load(open(tmp_path / "config.json"))
    assert record["data"]["validation"]["examples"] + record["data"]["train"]["examples"] == 256
    bundle = export.bundle_from_workdir(str(tmp_path), str(tmp_path / "bundle"), "best")  # the selected step
    assert bundle.meta["step"] == final["eval_selected/step"]
