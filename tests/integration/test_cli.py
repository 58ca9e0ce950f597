"""The command line: locked configs, flags given once, errors about the input in one line, multi-process launchers.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_cli.py.
"""

import os

from tests import cli_runs


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
