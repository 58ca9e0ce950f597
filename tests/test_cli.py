"""The command line: locked configs, flags given once, errors about the input in one line, multi-process launchers."""

import os

import pytest

from harjax import errors
from harjax.training import loop, parallel
from tests import cli_runs
from tests.conftest import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    return cli_runs.run_module("harjax.main", *args)


def _one_line_error(result, program="harjax.main"):
    """The error of a command line that refused its input: exit status 2, one line, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{program}: error: "), result.stderr[-3000:]
    return last


def test_misspelt_config_key_fails(tmp_path):
    result = _cli("--config=configs/full.py:synthetic", f"--workdir={tmp_path}", "--config.train.batch_sise=64")
    assert "--config.train.batch_sise: the config has no key 'train.batch_sise'" in _one_line_error(result)


def test_unknown_config_variant_fails(tmp_path):
    result = _cli("--config=configs/full.py:imagenet", f"--workdir={tmp_path}")
    assert "unknown config variant 'imagenet'" in _one_line_error(result)


def test_a_key_given_twice_is_refused_not_concatenated(tmp_path):
    result = _cli(
        "--config=configs/full.py:synthetic",
        f"--workdir={tmp_path / 'w'}",
        "--config.model.encoder_channels=(16,32)",
        "--config.model.encoder_channels=(8,16)",
    )
    assert "--config.model.encoder_channels is given twice" in _one_line_error(result)
    assert not os.path.exists(tmp_path / "w")


def test_a_bad_setting_a_file_workdir_and_a_text_npz_each_fail_in_one_line(tmp_path):
    small = ["--config=configs/sensor_only.py:synthetic", "--config.data.synthetic.num_train=64"]
    result = _cli(*small, f"--workdir={tmp_path / 'w'}", "--config.train.eval_every=0")
    assert "config.train.eval_every must be a positive integer, got 0" in _one_line_error(result)
    (tmp_path / "file").write_text("")
    result = _cli(*small, f"--workdir={tmp_path / 'file'}")
    assert "--workdir=" in _one_line_error(result) and "exists and is a file" in _one_line_error(result)
    (tmp_path / "train.npz").write_text("time,acc_x\n0,1\n")
    npz = [
        "--config.data.source=npz",
        f"--config.data.train_path={tmp_path / 'train.npz'}",
        f"--config.data.eval_path={tmp_path / 'train.npz'}",
    ]
    result = _cli(*small, *npz, f"--workdir={tmp_path / 'w2'}")
    assert "train.npz: not an .npz archive" in _one_line_error(result) and "it holds text" in result.stderr


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
    for name in (
        "SLURM_JOB_ID",
        "SLURM_STEP_NODELIST",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "TPU_WORKER_HOSTNAMES",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert parallel._cluster() == expected


def test_join_cluster_leaves_the_detection_to_jax(monkeypatch):
    """Cloud TPU VM slices are found only through JAX's metadata-server query, which --join_cluster asks for.

    A lone process outside any launcher must not start jax.distributed at all.
    """
    for name in (
        "SLURM_JOB_ID",
        "SLURM_STEP_NODELIST",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "TPU_WORKER_HOSTNAMES",
    ):
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
