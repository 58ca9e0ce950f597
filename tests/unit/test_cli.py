"""The command line: locked configs, flags given once, errors about the input in one line, multi-process launchers."""

import pytest

from harjax import errors
from harjax.training import loop, parallel
from tests.conftest import small_config

# What the launchers set; cleared first, so a test sees only its own.
LAUNCHER_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "TPU_WORKER_HOSTNAMES",
)


def test_eval_mode_without_checkpoint_says_train_first(tmp_path):
    with pytest.raises(errors.UserError, match="holds no checkpoint to evaluate; train first"):
        loop.evaluate(small_config(), str(tmp_path))


@pytest.mark.parametrize("key, value", [("eval_every", 0), ("num_steps", -1), ("batch_size", 12)])
def test_bad_train_settings_name_the_flag(tmp_path, key, value):
    config = small_config()
    config.train[key] = value
    with pytest.raises(ValueError, match=rf"config\.train\.{key}"):
        loop.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        (
            {
                "SLURM_JOB_ID": "7",
                "SLURM_STEP_NODELIST": "n[1-2]",
                "SLURM_NTASKS": "1",
                "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0",
            },
            None,
        ),  # a one-task SLURM job is a lone process
        (
            {
                "SLURM_JOB_ID": "7",
                "SLURM_STEP_NODELIST": "n[1-2]",
                "SLURM_NTASKS": "16",
                "SLURM_PROCID": "3",
                "SLURM_LOCALID": "3",
            },
            "SLURM",
        ),
        ({"TPU_WORKER_HOSTNAMES": "t1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}, "GKE TPU slice"),
    ],
)
def test_multi_process_launchers_are_recognised(monkeypatch, env, expected):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert parallel._cluster() == expected


def test_join_cluster_leaves_the_detection_to_jax(monkeypatch):
    """Cloud TPU VM slices are found only through JAX's metadata-server query, which --join_cluster asks for.

    A lone process outside any launcher must not start jax.distributed at all.
    """
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    parallel.initialize_distributed(None, None, None)
    assert calls == []
    parallel.initialize_distributed(None, None, None, join_cluster=True)
    assert calls == [{}]


def test_only_a_flag_that_collects_its_values_may_be_given_twice(capsys):
    from absl import flags

    from harjax import cli

    flags.DEFINE_multi_string("collected_for_test", [], "values that add up, as benchmarks' --override")
    flags.DEFINE_string("single_for_test", None, "one value")
    try:
        cli.check_arguments(["prog", "--collected_for_test=a", "--collected_for_test=b"])
        with pytest.raises(SystemExit) as exited:
            cli.check_arguments(["prog", "--single_for_test=a", "--single_for_test=b"])
        assert exited.value.code == cli.USAGE_STATUS
        assert "--single_for_test is given twice" in capsys.readouterr().err
    finally:
        delattr(flags.FLAGS, "collected_for_test")
        delattr(flags.FLAGS, "single_for_test")


def test_a_list_of_positive_integers_is_checked_when_parsed():
    from absl import flags

    from harjax import cli

    holder = cli.define_positive_integers("sizes_for_test", "8", "sizes")
    try:
        flags.FLAGS(["prog", "--sizes_for_test=2,16"])
        assert holder.value == ["2", "16"]
        for bad in ("--sizes_for_test=0", "--sizes_for_test=2,x", "--sizes_for_test="):
            with pytest.raises(flags.IllegalFlagValueError, match="expected comma-separated positive integers"):
                flags.FLAGS(["prog", bad])
    finally:
        delattr(flags.FLAGS, "sizes_for_test")
        flags.FLAGS.unparse_flags()
