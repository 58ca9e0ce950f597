"""Evaluators as plug-ins: configured by config.evals, checked before anything trains, and one file to add."""

import os
import re

import pytest

from harjax.evaluators import common as evaluators
from harjax.training import loop
from tests.conftest import REPO, small_config


def _names(config) -> dict[str, tuple]:
    return {
        schedule.name: (schedule.every, schedule.at_start, schedule.at_end) for schedule in evaluators.schedules(config)
    }


def test_the_split_that_selects_is_scored_during_training_and_the_test_split_after_it():
    config = small_config()
    config.train.eval_at_start = True
    assert _names(config) == {"eval": (3, True, False), "eval_retrieval": (3, True, False)}
    config.data.validation_fraction = 0.2
    assert _names(config) == {
        "val": (3, True, False),
        "val_retrieval": (3, True, False),
        "eval": (0, False, True),  # the test split informs no choice
        "eval_retrieval": (0, False, True),
        "eval_selected": (0, False, True),
        "eval_selected_retrieval": (0, False, True),
    }
    config.evals.val.every = 5  # one evaluator's own cadence
    config.evals.robustness.at_end = True
    names = _names(config)
    assert names["val"] == (5, True, False) and names["robustness"] == (0, False, True)


def test_evaluators_a_model_has_nothing_for_are_left_out():
    from configs import sensor_only

    config = small_config(sensor_only)
    config.evals.attention.at_end = True
    assert set(_names(config)) == {"eval"}  # no contrastive term, no keyless attention


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.evals.eval.update(type="confusion"), r"config\.evals\.eval\.type='confusion': no such evaluator"),
        (lambda c: c.evals.eval.update(type="mine.missing"), r"config\.evals\.eval\.type='mine\.missing': cannot"),
        (lambda c: c.evals.eval.update(split="train"), r"config\.evals\.eval\.split must be one of"),
        (lambda c: c.evals.eval_selected.update(every=10), r"config\.evals\.eval_selected: the selected checkpoint"),
        (lambda c: c.evals.eval.update(every=-1), r"config\.evals\.eval\.every must be a number of steps >= 0"),
        (lambda c: c.evals.eval.update(every=0), r"config\.evals: no classification evaluator runs during training"),
    ],
)
def test_a_bad_evaluator_config_fails_before_training_naming_the_key(tmp_path, change, message):
    config = small_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        loop.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_an_evaluator_key_it_does_not_take_is_named(tmp_path):
    config = small_config()
    config.evals.robustness.update(at_end=True)
    config.evals.robustness.unlock()
    config.evals.robustness.fractions = (0.5,)
    with pytest.raises(ValueError, match=r"config\.evals\.robustness: .*unexpected keyword argument 'fractions'"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_the_readme_example_evaluator_is_one_file_and_one_config_line(trained_full, tmp_path, monkeypatch):
    readme = open(os.path.join(REPO, "docs", "evaluators.md")).read()
    module = re.search(r"```python\n# my_evaluators/balanced_accuracy.py\n(.*?)```", readme, re.S).group(1)
    line = re.search(r"```python\n(config\.evals\.balanced = .*?)\n```", readme, re.S).group(1)
    (tmp_path / "my_evaluators").mkdir()
    (tmp_path / "my_evaluators" / "balanced_accuracy.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = trained_full.fresh_config()
    exec(line, {"config": config})
    scalars = loop.evaluate(config, trained_full.copy(tmp_path / "workdir"))
    assert 0 <= scalars["eval/balanced_accuracy"] <= 1 and "eval/accuracy" in scalars
