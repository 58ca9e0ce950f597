"""The config argument (--config=FILE:[VARIANT][,size=SIZE], configs/common.py) of every config file and suite.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_configs.py.
"""

import os

from tests import cli_runs


def test_the_command_line_refuses_an_unknown_size_in_one_line(tmp_path):
    result = cli_runs.run_module(
        "harjax.main", "--config=configs/full.py:synthetic,size=bogus", f"--workdir={tmp_path / 'w'}"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("harjax.main: error: ") and "unknown config size 'bogus'" in result.stderr
    assert "choose one of full, tiny" in result.stderr and not os.path.exists(tmp_path / "w")
